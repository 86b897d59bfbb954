"""What is specific to training the SyncNet expert (`lipsync train-syncnet`): its options, its
windows of a packed training split, its objective (a loss scheme) and its validation metric. The
loop itself (resume, SIGTERM, NaN stop, logs, checkpoints) is lipsync.training.loop.run_training's.

Validation is in-sync vs off-sync accuracy on clips of the training split held out by a seeded
rule (lipsync.experts.sync.dataset.held_out_clips), never on the test split.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults, resolve
from lipsync.experts.sync.dataset import SyncWindows, expert_inputs, held_out_clips, read_index
from lipsync.models import syncnet
from lipsync.training.checkpoint import run_folder
from lipsync.training.loop import Trainee, run_training, set_aside_stale_checkpoints
from lipsync.training.options import OPTIONS as LOOP_OPTIONS
from lipsync.training.precision import Precision

log = get_logger("lipsync.experts.sync.train")

# The expert's own options; they fix its weights, so a change starts over.
EXPERT_OPTIONS = {
    "learning_rate": Option(1e-4, float, "Adam (Wav2Lip's expert: 1e-4, default betas).",
                            above=0),
    "min_offset": Option(3, int, "Off-sync pairs of the same clip are at least this many frames "
                         "away (shorter offsets overlap the 5-frame window too much to be wrong "
                         "for certain).", minimum=1),
    "other_clip_fraction": Option(0.25, float, "Share of off-sync pairs that take another "
                                  "clip's audio.", minimum=0, maximum=1),
    "validation_fraction": Option(0.05, float, "Share of the training split's clips held out "
                                  "for validation (at least 2, at most 200 clips).", minimum=0,
                                  maximum=0.5),
}
# The loop's options with the expert's schedule (Wav2Lip's where it publishes one).
_SCHEDULE = {
    "batch_size": (64, "Windows per step (Wav2Lip's expert: 64)."),
    "total_samples": (3_200_000, "Training length in windows: 50 k steps of 64, about 1.5 passes "
                      "over GRIDFull's ~2.1 M windows (Wav2Lip trains its LRS2 expert until the "
                      "validation loss is about 0.25; GRID's uniform faces need less)."),
    "validation_samples": (2048, "Evenly spaced held-out pairs scored per validation "
                           "(0 = all)."),
    "validation_every_samples": (64_000, "How often the held-out accuracy is computed."),
    "checkpoint_every_samples": (64_000, "Checkpoint interval (1000 steps of 64)."),
    "log_every_samples": (6_400, "How often mean loss, accuracy and windows/s are logged."),
}
OPTIONS = {**{name: dataclasses.replace(option, default=_SCHEDULE[name][0],
                                        doc=_SCHEDULE[name][1])
              if name in _SCHEDULE else option for name, option in LOOP_OPTIONS.items()},
           **EXPERT_OPTIONS}
DEFAULTS = defaults(OPTIONS)



class ExpertObjective:
    """Binary cross-entropy on the expert's sync logit (in sync = 1), one Adam step per batch."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def optimizers(self, networks: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"expert": torch.optim.Adam(networks["expert"].parameters(),
                                           lr=self.learning_rate)}

    def train_step(self, batch: dict, step: int, *, seed: int, networks: dict[str, nn.Module],
                   optimizers: dict, precision: Precision) -> dict[str, torch.Tensor]:
        expert = networks["expert"]
        with precision.autocast():
            logit = expert(batch["faces"], batch["mel"]).float()
        loss = F.binary_cross_entropy_with_logits(logit, batch["label"])
        precision.update(loss, optimizers["expert"], expert, "expert")
        hits = ((logit.detach() > 0).float() == batch["label"]).float()
        return {"loss": loss.detach(), "accuracy": hits.mean()}


def _prepare(batch: dict, device: torch.device) -> dict:
    faces, mel, label = expert_inputs(batch, device)
    return {"faces": faces, "mel": mel, "label": label}


@torch.no_grad()
def held_out_accuracy(expert, validation, *, device: torch.device | str = "cpu",
                      batch_size: int = 128, precision: Precision | None = None) -> dict:
    """In-sync vs off-sync accuracy (logit > 0 means "in sync"), BCE, and the AUC over
    `validation`: the share of (in-sync, off-sync) pairs of pairs whose in-sync one scores higher,
    which does not depend on where the learnt bias puts the threshold (0.5: no separation)."""
    device = torch.device(device)
    precision = precision or Precision(device, False)
    was_training = expert.training
    expert.eval()
    correct = {1.0: [], 0.0: []}
    logits = {1.0: [], 0.0: []}
    losses = []
    for batch in DataLoader(validation, batch_size=batch_size, shuffle=False):
        faces, mel, label = expert_inputs(batch, device)
        with precision.autocast():
            logit = expert(faces, mel).float()
        losses.append(F.binary_cross_entropy_with_logits(logit, label, reduction="none").cpu())
        hits = ((logit > 0).float() == label).cpu()
        for value in correct:
            correct[value].append(hits[label.cpu() == value])
            logits[value].append(logit.cpu()[label.cpu() == value])
    expert.train(was_training)
    in_sync, off_sync = (torch.cat(correct[v]).float() for v in (1.0, 0.0))
    both = torch.cat([in_sync, off_sync])
    return {"accuracy": float(both.mean()), "in_sync_accuracy": float(in_sync.mean()),
            "off_sync_accuracy": float(off_sync.mean()), "loss": float(torch.cat(losses).mean()),
            "auc": _auc(torch.cat(logits[1.0]), torch.cat(logits[0.0])),
            "pairs": int(both.numel())}


def _auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U / n+ n-)."""
    if positive.numel() == 0 or negative.numel() == 0:
        return float("nan")
    above = (positive[:, None] > negative[None, :]).double().mean()
    ties = (positive[:, None] == negative[None, :]).double().mean()
    return float(above + ties / 2)


def _validate(networks: dict, validation, *, device: torch.device, precision: Precision) -> dict:
    return held_out_accuracy(networks["expert"], validation, device=device, precision=precision)


def expert_windows(train_set: str | os.PathLike, model_options: dict, o: dict
                   ) -> tuple[SyncWindows, SyncWindows | Subset | None, list]:
    """(training windows, held-out validation pairs or None, held-out clip keys) of a split."""
    import h5py

    with h5py.File(train_set, "r") as handle:
        index = read_index(str(train_set), handle)
    held = held_out_clips(index.keys, o["seed"], o["validation_fraction"])
    frames = model_options["frames"]
    common = {"frames": frames, "window": syncnet.mel_window(frames), "seed": o["seed"],
              "min_offset": o["min_offset"], "other_clip_fraction": o["other_clip_fraction"]}
    train = SyncWindows(train_set, [k for k, key in enumerate(index.keys) if key not in held],
                        **common)
    validation = None
    if held:
        validation = SyncWindows(train_set, [k for k, key in enumerate(index.keys)
                                             if key in held], fixed=True, **common)
        if o["validation_samples"] and len(validation) > o["validation_samples"]:
            # evenly spaced, and an even count so in-sync and off-sync stay balanced
            picks = np.linspace(0, len(validation) // 2 - 1, o["validation_samples"] // 2)
            picks = np.unique(picks.round().astype(int))
            validation = Subset(validation, np.stack([2 * picks, 2 * picks + 1], 1).ravel()
                                .tolist())
    return train, validation, sorted(held)


def expert_trainee(model_options: dict | None = None, settings: dict | None = None,
                   info: dict | None = None) -> Trainee:
    """The sync expert as the loop trains it: one network "expert", ExpertObjective, held-out
    accuracy as validation; `settings`: EXPERT_OPTIONS values (defaults where missing)."""
    model_options = syncnet.resolve_options(model_options)
    settings = resolve(EXPERT_OPTIONS, settings, "syncnet.training")

    def build():
        return ({"expert": syncnet.build(model_options)},
                ExpertObjective(settings["learning_rate"]))

    return Trainee(model="syncnet", model_options=model_options, build=build, prepare=_prepare,
                   exports=("expert",), kind="syncnet", validate=_validate, settings=settings,
                   info=info or {})


def train_expert(train_set: str | os.PathLike, output: str | os.PathLike, *,
                 options: dict | None = None, threads: int = 1) -> dict:
    """Train the expert on `train_set` (a packed split) and write `output` (expert.pt).

    `options`: the config's `syncnet` section: `model` (lipsync.models.syncnet.OPTIONS),
    `training` (OPTIONS above: the loop's options with the expert's schedule, and
    EXPERT_OPTIONS); `public_weights` is not read here. Resumes from the newest checkpoint in
    run_folder(output)/checkpoints that loads.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - {"model", "training", "train_set"})
    if unknown:
        raise LipsyncError(f"syncnet: unknown key(s) {', '.join(unknown)}; known: model, "
                           "training, train_set")
    model_options = syncnet.resolve_options(options.get("model"))
    training = dict(options.get("training") or {})
    training.setdefault("num_workers", max(0, threads - 1))
    o = resolve(OPTIONS, training, "syncnet.training")
    if not Path(train_set).is_file():
        raise InputError(train_set, "training set not found")
    torch.set_num_threads(max(1, threads))
    settings = {name: o[name] for name in EXPERT_OPTIONS}
    run_dir = run_folder(output)
    set_aside_stale_checkpoints(run_dir, train_set, {
        "model": "syncnet", "model_options": model_options, "seed": o["seed"],
        "batch_size": o["batch_size"], **settings})
    train, validation, held = expert_windows(train_set, model_options, o)
    held = [list(key) for key in held]
    trainee = expert_trainee(model_options, settings,
                             info={"held_out_clips": held, "train_set": str(train_set)})
    summary = run_training(trainee, train_set=train, run_dir=run_dir, output=output,
                           validation_set=validation,
                           record={"train_set": str(train_set), "held_out_clips": held},
                           **{name: o[name] for name in LOOP_OPTIONS})
    accuracy = (summary["validation"] or {}).get("accuracy")
    log.info("sync expert: held-out accuracy %s", "none" if accuracy is None else f"{accuracy:.3f}")
    return {**summary, "held_out_clips": len(held)}
