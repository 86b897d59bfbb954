"""What is specific to training the GRID lip reader (`lipsync train-lipreader`): its options, its
word-slot examples of a packed training split, its objective (a loss scheme) and its validation
(per-slot accuracy, WER, CER). The loop itself (resume, SIGTERM, NaN stop, logs, checkpoints) is
lipsync.training.loop.run_training's. Validation is on clips of the training split held out by a seeded
hash (lipsync.experts.sync.dataset.held_out_clips), never on the test split.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults, resolve
from lipsync.data import alignments
from lipsync.experts.lipread import objective
from lipsync.experts.lipread.dataset import WordSlots, read_clip_mouths
from lipsync.experts.sync.dataset import held_out_clips
from lipsync.models import lipreader
from lipsync.training import checkpoint
from lipsync.training.checkpoint import run_folder
from lipsync.training.loop import Trainee, run_training, set_aside_stale_checkpoints
from lipsync.training.options import OPTIONS as LOOP_OPTIONS
from lipsync.training.precision import Precision

log = get_logger(__name__)

# The lip reader's own options; they fix its weights, so a change starts over.
READER_OPTIONS = {
    "learning_rate": Option(1e-3, float, "Adam (default betas).", above=0),
    "validation_fraction": Option(0.1, float, "Share of the training split's clips held out "
                                  "for validation (at least 2 when there are 8 or more).",
                                  minimum=0, maximum=0.5),
}
# The loop's options with the lip reader's schedule.
_SCHEDULE = {
    "batch_size": (32, "Word examples per step."),
    "total_samples": (96_000, "Training length in word examples: about 60 passes over 300 GRID "
                      "clips' 1,620 training words."),
    "validation_samples": (0, "Held-out word examples scored per validation (0 = all)."),
    "validation_every_samples": (16_000, "How often the held-out accuracy is computed."),
    "checkpoint_every_samples": (16_000, "Checkpoint interval."),
    "log_every_samples": (3_200, "How often mean loss, accuracy and examples/s are logged."),
    "num_workers": (0, "DataLoader workers: the examples are in memory already."),
}
OPTIONS = {**{name: dataclasses.replace(option, default=_SCHEDULE[name][0],
                                        doc=_SCHEDULE[name][1])
              if name in _SCHEDULE else option for name, option in LOOP_OPTIONS.items()},
           **READER_OPTIONS}
DEFAULTS = defaults(OPTIONS)



class WordObjective:
    """Cross-entropy over the slot's words (the network masks the others), one Adam step."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def optimizers(self, networks: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"lipreader": torch.optim.Adam(networks["lipreader"].parameters(),
                                              lr=self.learning_rate)}

    def train_step(self, batch: dict, step: int, *, seed: int, networks: dict[str, nn.Module],
                   optimizers: dict, precision: Precision) -> dict[str, torch.Tensor]:
        network = networks["lipreader"]
        with precision.autocast():
            logits = network(batch["mouths"], batch["slot"]).float()
        loss = F.cross_entropy(logits, batch["word"])
        precision.update(loss, optimizers["lipreader"], network, "lipreader")
        hits = (logits.detach().argmax(dim=1) == batch["word"]).float()
        return {"loss": loss.detach(), "accuracy": hits.mean()}


def _prepare(batch: dict, device: torch.device) -> dict:
    return {"mouths": batch["mouths"].to(device), "slot": batch["slot"].to(device),
            "word": batch["word"].to(device)}


def held_out_scores(network: nn.Module, validation: WordSlots, *,
                    device: torch.device | str = "cpu") -> dict:
    """Accuracy (overall and per slot), WER and CER of whole held-out clips, as floats."""
    was_training = network.training
    predicted = objective.predict(network, validation.examples, validation.slots,
                                  torch.device(device))
    network.train(was_training)
    scores = objective.scores(predicted, validation.labels)
    return {"accuracy": scores["accuracy"], "wer": scores["wer"], "cer": scores["cer"],
            "clips": float(scores["clips"]),
            **{f"accuracy_{slot}": value for slot, value in scores["slot_accuracy"].items()}}


@torch.no_grad()
def recalibrate_batchnorm(network: nn.Module, examples: WordSlots, *,
                          device: torch.device | str = "cpu", batch_size: int = 64,
                          limit: int = 0) -> nn.Module:
    """Recompute every BatchNorm's statistics as the plain average over `examples` (the first
    `limit`, 0 = all) with the weights as they are (the running averages lag moving weights)."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = network.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    network.train()
    count = min(len(examples), limit) if limit else len(examples)
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        mouths = torch.from_numpy(examples.examples[start:stop].astype("float32") / 255.0)
        network(mouths.to(device), torch.from_numpy(examples.slots[start:stop]).to(device))
    for norm in norms:
        norm.momentum = 0.1
    network.train(was_training)
    return network


# Training examples whose BatchNorm statistics a validation recomputes (on a copy).
CALIBRATION_EXAMPLES = 1920


def reader_trainee(model_options: dict | None = None, settings: dict | None = None,
                   info: dict | None = None, calibration: WordSlots | None = None) -> Trainee:
    """The lip reader as the loop trains it: one network "lipreader", WordObjective, held-out
    per-slot accuracy and WER as validation (on a copy whose BatchNorm statistics are recomputed
    over `calibration`, training examples); `settings`: READER_OPTIONS values."""
    model_options = lipreader.resolve_options(model_options)
    settings = resolve(READER_OPTIONS, settings, "lipreader.training")

    def _validate(networks: dict, validation, *, device: torch.device,
                  precision: Precision) -> dict:
        network = networks["lipreader"]
        if calibration is not None:
            network = recalibrate_batchnorm(copy.deepcopy(network), calibration, device=device,
                                            limit=CALIBRATION_EXAMPLES)
        return held_out_scores(network, validation, device=device)

    def build():
        return ({"lipreader": lipreader.build(model_options)},
                WordObjective(settings["learning_rate"]))

    return Trainee(model="lipreader", model_options=model_options, build=build,
                   prepare=_prepare, exports=("lipreader",), kind="lipreader",
                   validate=_validate, settings=settings, info=info or {})


def word_examples(train_set, words_paths, model_options: dict, o: dict
                  ) -> tuple[WordSlots, WordSlots | None, list]:
    """(training examples, held-out examples or None, held-out clip keys) of a split."""
    clips, fps = read_clip_mouths(train_set, model_options)
    words = alignments.read_words(words_paths)
    keys = [(c.speaker, c.clip) for c in clips if (c.speaker, c.clip) in words]
    held = held_out_clips(keys, o["seed"], o["validation_fraction"])
    frames = model_options["frames"]
    train = WordSlots([c for c in clips if (c.speaker, c.clip) not in held], words, fps, frames)
    validation = (WordSlots([c for c in clips if (c.speaker, c.clip) in held], words, fps,
                            frames) if held else None)
    return train, validation, sorted(held)


def train_lipreader(train_set: str | os.PathLike, words: list[str | os.PathLike],
                    output: str | os.PathLike, *, options: dict | None = None,
                    threads: int = 1) -> dict:
    """Train on `train_set` (a packed split) with the word tables `words`; write `output`.

    `options`: the config's `lipreader` section: `model` (lipsync.models.lipreader.OPTIONS),
    `training` (OPTIONS above). Resumes from the newest checkpoint in
    run_folder(output)/checkpoints that loads.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - {"model", "training", "train_set"})
    if unknown:
        raise LipsyncError(f"lipreader: unknown key(s) {', '.join(unknown)}; known: model, "
                           "training, train_set")
    model_options = lipreader.resolve_options(options.get("model"))
    o = resolve(OPTIONS, options.get("training"), "lipreader.training")
    if not Path(train_set).is_file():
        raise InputError(train_set, "training set not found")
    # torch's default of a thread per core oversubscribes a shared machine (measured: 20x slower
    # per step with 2 threads beside other jobs on 2 cores)
    torch.set_num_threads(max(1, threads))
    settings = {name: o[name] for name in READER_OPTIONS}
    run_dir = run_folder(output)
    set_aside_stale_checkpoints(run_dir, train_set, {
        "model": "lipreader", "model_options": model_options, "seed": o["seed"],
        "batch_size": o["batch_size"], **settings})
    train, validation, held = word_examples(train_set, words, model_options, o)
    held = [list(key) for key in held]
    trainee = reader_trainee(model_options, settings,
                             info={"held_out_clips": held, "train_set": str(train_set)},
                             calibration=train)
    summary = run_training(trainee, train_set=train, run_dir=run_dir, output=output,
                           validation_set=validation,
                           record={"train_set": str(train_set), "held_out_clips": held},
                           **{name: o[name] for name in LOOP_OPTIONS})
    scores = _finish(output, train, validation)
    summary["validation"] = scores or summary["validation"]
    log.info("lip reader: held-out accuracy %s, WER %s (%d clips)",
             f"{scores['accuracy']:.3f}" if scores else "none",
             f"{scores['wer']:.3f}" if scores else "none", len(held))
    return {**summary, "held_out_clips": len(held)}


def _finish(output, train: WordSlots, validation: WordSlots | None) -> dict:
    """Recompute the output network's BatchNorm statistics over all training examples, score
    the held-out clips with it, and rewrite the output file (atomically) with both."""
    state = torch.load(output, map_location="cpu", weights_only=False)
    network = lipreader.build(state["model_options"])
    network.load_state_dict(state["networks"]["lipreader"])
    recalibrate_batchnorm(network, train)
    scores = held_out_scores(network, validation) if validation is not None else {}
    state["networks"]["lipreader"] = network.state_dict()
    state["validation"] = scores or state.get("validation")
    state["batchnorm"] = f"statistics recomputed over the {len(train)} training examples"
    checkpoint.save(output, state)
    return scores


def load_lipreader(path: str | os.PathLike, device: torch.device | str = "cpu"
                   ) -> tuple[nn.Module, dict]:
    """The lip reader of a trained file (train_lipreader's output) or a checkpoint, in eval
    mode, and what the file says about it (model_options, validation, ...)."""
    if not Path(path).is_file():
        raise InputError(path, "lip reader weights not found (lipsync train-lipreader writes "
                               "them)")
    return checkpoint.load_network(path, "lipreader",
                                   lambda state: lipreader.build(state["model_options"]), device)
