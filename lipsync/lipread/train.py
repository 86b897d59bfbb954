"""Training the GRID lip reader (`lipsync train-lipreader`) on a packed training split's real
mouths and the corpus's word alignments; validation on clips of that split held out by a seeded
hash (never the test split).

A minimal loop of its own until the one training engine takes the network, the dataset and the
objective (lipsync.lipread.dataset / objective): self-describing checkpoints saved atomically,
resume from the newest one (same options), a SIGTERM saves before exit, log.jsonl, and the final
`lipreader.pt` holds the network, its options and its held-out scores.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from lipsync import checkpoint as ckpt
from lipsync import rng
from lipsync.data import alignments
from lipsync.device import pick_device
from lipsync.errors import InputError, LipsyncError
from lipsync.io import write_json
from lipsync.lipread import objective
from lipsync.lipread.dataset import WordSlots, read_clip_mouths
from lipsync.logs import get_logger
from lipsync.models import lipreader
from lipsync.options import Option, resolve
from lipsync.provenance import describe
from lipsync.sync.dataset import held_out_clips

log = get_logger(__name__)

OPTIONS = {
    "seed": Option(0, int, "Seeds the weights, the held-out clips and the data order.",
                   minimum=0),
    "batch_size": Option(32, int, "Word examples per step.", minimum=1),
    "learning_rate": Option(1e-3, float, "Adam (default betas).", above=0),
    "total_samples": Option(96_000, int, "Training length in word examples: about 50 passes "
                            "over 300 GRID clips' 1,800 words.", minimum=1),
    "validation_fraction": Option(0.1, float, "Share of the training split's clips held out "
                                  "for validation.", minimum=0, maximum=0.5),
    "checkpoint_every_samples": Option(16_000, int, "Checkpoint interval.", minimum=1),
    "keep_checkpoints": Option(2, int, "Newest checkpoints kept.", minimum=1),
    "device": Option("auto", str, "\"auto\" (CUDA when present), \"cpu\", \"cuda\"."),
}
# Options that fix what the weights are: a checkpoint made under others is not resumed.
_RESUME_KEYS = ("seed", "batch_size", "learning_rate", "validation_fraction")


def resolve_options(options: dict | None) -> dict:
    return resolve(OPTIONS, options, "lipreader.training")


def load_lipreader(path: str | os.PathLike, device="cpu") -> tuple[torch.nn.Module, dict]:
    """The network of a lip reader file (train_lipreader's output, or a checkpoint) in eval mode, and the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "lip reader weights not found (lipsync train-lipreader writes "
                               "them)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign file
        raise InputError(path, f"not a readable torch file ({error})") from None
    if not isinstance(state, dict) or "lipreader" not in state:
        raise InputError(path, "not a lip reader file (no 'lipreader' state)")
    network = lipreader.build(state["model_options"])
    network.load_state_dict(state["lipreader"])
    return network.to(device).eval(), state


def _split_examples(split, words_paths, model_options: dict, s: dict):
    clips, fps = read_clip_mouths(split, model_options)
    words = alignments.read_words(words_paths)
    data = WordSlots(clips, words, fps, model_options["frames"])
    held = held_out_clips(data.keys, s["seed"], s["validation_fraction"])
    clip_of = np.repeat(np.arange(len(data.keys)), len(alignments.SLOTS))
    is_held = np.array([data.keys[c] in held for c in clip_of])
    return data, np.flatnonzero(~is_held), np.flatnonzero(is_held)


def validate(network, data: WordSlots, indices: np.ndarray, device) -> dict:
    if not len(indices):
        return {}
    predicted = objective.predict(network, data.examples[indices], data.slots[indices], device)
    return objective.scores(predicted, data.labels[indices])


def _resume(folder: Path, network, optimizer, s: dict, model_options: dict) -> int:
    path = ckpt.latest_checkpoint(folder)
    if path is None:
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    made_with = {k: state["options"].get(k) for k in _RESUME_KEYS}
    if made_with != {k: s[k] for k in _RESUME_KEYS} or state["model_options"] != model_options:
        raise LipsyncError(f"{path} was made under other options ({made_with}, model "
                           f"{state['model_options']}); move it aside to start over")
    network.load_state_dict(state["lipreader"])
    optimizer.load_state_dict(state["optimizer"])
    rng.set_rng_state(state["rng"])
    log.info("resuming from %s (%d samples)", path, state["samples"])
    return int(state["samples"])


def _state(network, optimizer, samples: int, s: dict, model_options: dict, **extra) -> dict:
    return {"lipreader": network.state_dict(), "optimizer": optimizer.state_dict(),
            "samples": samples, "options": s, "model_options": model_options,
            "rng": rng.rng_state(), "provenance": describe(), **extra}


def train_lipreader(split: str | os.PathLike, words: list[str | os.PathLike],
                    output: str | os.PathLike, *, options: dict | None = None,
                    model_options: dict | None = None, threads: int = 1) -> dict:
    """Train on `split` (a packed training split) with the word tables `words`; checkpoints,
    log.jsonl and validation.json go beside `output` (resumed from the newest checkpoint there);
    writes the final network to `output` and returns its held-out scores."""
    # torch's default of every core's thread oversubscribes a shared machine (measured: 20x
    # slower per step with 2 threads beside other jobs on 2 cores)
    torch.set_num_threads(max(1, threads))
    s, model_options = resolve_options(options), lipreader.resolve_options(model_options)
    folder = Path(output).parent
    folder.mkdir(parents=True, exist_ok=True)
    device = pick_device(s["device"])
    rng.seed_all(s["seed"])
    data, train_items, held = _split_examples(split, words, model_options, s)
    network = lipreader.build(model_options).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=s["learning_rate"])
    samples = _resume(folder, network, optimizer, s, model_options)
    stop = {"signal": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal=True))
    started = time.perf_counter()
    try:
        samples = _loop(network, optimizer, data, train_items, samples, s, model_options,
                        folder, device, stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stop["signal"]:
        raise LipsyncError(f"stopped by SIGTERM at {samples} samples; checkpoint saved in "
                           f"{folder}: rerun to resume")
    scores = validate(network, data, held, device)
    scores.update(train_clips=len(data.keys) - len(held) // len(alignments.SLOTS),
                  held_out_clips=len(held) // len(alignments.SLOTS), samples=samples,
                  seconds_this_job=round(time.perf_counter() - started, 1))
    ckpt.save(output, _state(network, optimizer, samples, s, model_options,
                                     validation=scores))
    write_json(folder / "validation.json", scores)
    log.info("lip reader: held-out accuracy %.3f, WER %.3f (%d clips)",
             scores.get("accuracy", float("nan")), scores.get("wer", float("nan")),
             scores["held_out_clips"])
    return scores


def _loop(network, optimizer, data, train_items, samples, s, model_options, folder, device,
          stop) -> int:
    generator = torch.Generator().manual_seed(s["seed"] + samples)
    loader = DataLoader(Subset(data, train_items.tolist()), batch_size=s["batch_size"],
                        shuffle=True, drop_last=len(train_items) > s["batch_size"],
                        generator=generator)
    next_checkpoint = (samples // s["checkpoint_every_samples"] + 1) * s["checkpoint_every_samples"]
    with open(folder / "log.jsonl", "a") as journal:
        while samples < s["total_samples"] and not stop["signal"]:
            network.train()
            for batch in loader:
                value, correct = objective.loss(network, batch, device)
                if not torch.isfinite(value):
                    raise LipsyncError(f"non-finite loss at {samples} samples; last checkpoint "
                                       f"{ckpt.latest_checkpoint(folder)}")
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                samples += len(batch["word"])
                journal.write(json.dumps({"samples": samples, "loss": float(value.detach()),
                                          "accuracy": float(correct) / len(batch["word"])})
                              + "\n")
                if samples >= next_checkpoint or samples >= s["total_samples"] or stop["signal"]:
                    ckpt.save(ckpt.checkpoint_path(folder, samples),
                              _state(network, optimizer, samples, s, model_options))
                    ckpt.prune(folder, s["keep_checkpoints"])
                    next_checkpoint += s["checkpoint_every_samples"]
                if samples >= s["total_samples"] or stop["signal"]:
                    break
    return samples
