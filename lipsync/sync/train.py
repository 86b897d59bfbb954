"""Training the SyncNet expert (`lipsync train-syncnet`) on a packed training split's real faces,
with the generators' guarantees: self-describing checkpoints, bit-identical resume on CPU, save
on SIGTERM, stop on a non-finite loss naming the last good checkpoint, log.jsonl, progress bar.

Validation is in-sync vs off-sync accuracy on clips of the training split held out by a seeded
rule (lipsync.sync.dataset.held_out_clips), never on the test split.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from lipsync import checkpoint as ckpt
from lipsync import rng
from lipsync.device import pick_device
from lipsync.errors import InputError, LipsyncError, TrainingError
from lipsync.io import write_json
from lipsync.logs import get_logger
from lipsync.models import syncnet
from lipsync.options import Option, defaults, resolve
from lipsync.precision import Precision
from lipsync.progress import progress
from lipsync.provenance import describe as provenance
from lipsync.sync.dataset import SyncWindows, expert_inputs, held_out_clips, read_index
from lipsync.train import EpochBatches, TrainingInterrupted, epoch_order

log = get_logger("lipsync.sync.train")

# Wav2Lip's expert schedule where it publishes one; the rest say why.
OPTIONS = {
    "seed": Option(0, int, "Seeds the weights, the held-out clips, the data order and every "
                   "pairing.", minimum=0),
    "batch_size": Option(64, int, "Windows per step (Wav2Lip's expert: 64).", minimum=2),
    "learning_rate": Option(1e-4, float, "Adam (Wav2Lip's expert: 1e-4, default betas).",
                            above=0),
    "total_samples": Option(3_200_000, int, "Training length in windows: 50 k steps of 64, "
                            "about 1.5 passes over GRIDFull's ~2.1 M windows (Wav2Lip trains "
                            "its LRS2 expert until the validation loss is about 0.25; GRID's "
                            "uniform faces need less).", minimum=1),
    "min_offset": Option(3, int, "Off-sync pairs of the same clip are at least this many frames "
                         "away (shorter offsets overlap the 5-frame window too much to be wrong "
                         "for certain).", minimum=1),
    "other_clip_fraction": Option(0.25, float, "Share of off-sync pairs that take another "
                                  "clip's audio.", minimum=0, maximum=1),
    "validation_fraction": Option(0.05, float, "Share of the training split's clips held out "
                                  "for validation (at least 2, at most 200 clips).", minimum=0,
                                  maximum=0.5),
    "validation_windows": Option(2048, int, "Evenly spaced held-out pairs scored per "
                                 "validation (0 = all).", minimum=0),
    "validation_every_samples": Option(64_000, int, "How often the held-out accuracy is "
                                       "computed.", minimum=1),
    "checkpoint_every_samples": Option(64_000, int, "Checkpoint interval (1000 steps of 64).",
                                       minimum=1),
    "keep_checkpoints": Option(3, int, "Newest checkpoints kept.", minimum=1),
    "log_every_samples": Option(6_400, int, "How often mean loss, accuracy and windows/s are "
                                "logged.", minimum=1),
    "num_workers": Option(2, int, "DataLoader workers (the workflow passes the job's threads).",
                          minimum=0),
    "mixed_precision": Option(True, bool, "bf16/fp16 autocast on a GPU (float32 on CPU); "
                              "\"bf16\" or \"fp16\" force one.", choices=("bf16", "fp16")),
    "device": Option("auto", str, "\"auto\" (CUDA when present), \"cpu\", \"cuda\"."),
    "progress_bar": Option(True, bool, "Show a progress bar."),
}
DEFAULTS = defaults(OPTIONS)
# Options that fix the weights a checkpoint holds: a change starts over.
_RESUME_KEYS = ("model_options", "seed", "batch_size", "learning_rate", "min_offset",
                "other_clip_fraction", "validation_fraction")
# Precision keeps one gradient scaler per network name; the expert uses the generator's slot.
_SCALER = "generator"


@dataclass
class _Run:
    run_dir: Path
    output: Path
    train_set: str
    model_options: dict
    o: dict
    device: torch.device
    config: dict = field(default_factory=dict)
    step: int = 0
    samples: int = 0
    steps_per_epoch: int = 0
    last_good: Path | None = None
    resumed_from: Path | None = None
    held_out: list = field(default_factory=list)

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"


def run_folder(output: str | os.PathLike) -> Path:
    """Where an expert's checkpoints and logs go: results/syncnet/expert.pt -> .../expert/."""
    output = Path(output)
    return output.parent / output.stem


def train_expert(train_set: str | os.PathLike, output: str | os.PathLike, *,
                 options: dict | None = None, threads: int = 1) -> dict:
    """Train the expert on `train_set` (a packed split) and write `output` (expert.pt).

    `options`: the config's `syncnet` section: `model` (lipsync.models.syncnet.OPTIONS),
    `training` (OPTIONS above); `public_weights` is not read here. Resumes from the newest
    checkpoint in run_folder(output)/checkpoints that loads.
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
    output = Path(output)
    run = _Run(run_dir=run_folder(output), output=output, train_set=str(train_set),
               model_options=model_options, o=o, device=pick_device(o["device"]))
    run.config = {"model": "syncnet", "model_options": model_options, **o,
                  "device": str(run.device), "train_set": str(train_set)}
    _set_aside_stale_checkpoints(run)
    return _train(run)


def _datasets(run: _Run) -> tuple[SyncWindows, SyncWindows | None]:
    import h5py

    o = run.o
    with h5py.File(run.train_set, "r") as handle:
        index = read_index(run.train_set, handle)
    held = held_out_clips(index.keys, o["seed"], o["validation_fraction"])
    run.held_out = sorted(held)
    clips = [k for k, key in enumerate(index.keys) if key not in held]
    frames = run.model_options["frames"]
    common = {"frames": frames, "window": syncnet.mel_window(frames), "seed": o["seed"],
              "min_offset": o["min_offset"], "other_clip_fraction": o["other_clip_fraction"]}
    train = SyncWindows(run.train_set, clips, **common)
    validation = None
    if held:
        validation = SyncWindows(run.train_set, [k for k, key in enumerate(index.keys)
                                                 if key in held], fixed=True, **common)
        if o["validation_windows"] and len(validation) > o["validation_windows"]:
            # evenly spaced, and an even count so in-sync and off-sync stay balanced
            picks = np.linspace(0, len(validation) // 2 - 1, o["validation_windows"] // 2)
            picks = np.unique(picks.round().astype(int))
            validation = Subset(validation, np.stack([2 * picks, 2 * picks + 1], 1).ravel()
                                .tolist())
    return train, validation


def _train(run: _Run) -> dict:
    o = run.o
    dataset, validation = _datasets(run)
    run.steps_per_epoch = len(dataset) // o["batch_size"]
    if run.steps_per_epoch == 0:
        raise InputError(run.train_set, f"{len(dataset)} training windows, fewer than one batch "
                                        f"of {o['batch_size']}")
    rng.seed_all(o["seed"])
    expert = syncnet.build(run.model_options).to(run.device)
    optimizer = torch.optim.Adam(expert.parameters(), lr=o["learning_rate"])
    precision = Precision(run.device, o["mixed_precision"])
    _resume(run, expert, optimizer, precision)
    run.config["held_out_clips"] = [list(key) for key in run.held_out]
    write_json(run.run_dir / "training_options.json", run.config)
    bar = progress(total=o["total_samples"], initial=min(run.samples, o["total_samples"]),
                   unit="window", disable=not o["progress_bar"], desc="train syncnet")
    last_validation = None
    try:
        with _sigterm_flag() as stop:
            last_validation = _epochs(run, expert, optimizer, precision, dataset, validation,
                                      bar, stop)
        if validation is not None:
            last_validation = _validate(run, expert, validation, precision)
        export_expert(run, expert, last_validation)
    finally:
        bar.close()
    log.info("trained the sync expert for %d windows; held-out accuracy %s; written to %s",
             run.samples, None if last_validation is None else
             f"{last_validation['accuracy']:.3f}", run.output)
    return {"output": str(run.output), "step": run.step, "samples": run.samples,
            "validation": last_validation, "held_out_clips": len(run.held_out),
            "checkpoint": str(run.last_good) if run.last_good else None,
            "resumed_from": str(run.resumed_from) if run.resumed_from else None}


def _loss(expert, batch, device, precision) -> tuple[torch.Tensor, torch.Tensor]:
    faces, mel, label = expert_inputs(batch, device)
    with precision.autocast():
        logit = expert(faces, mel).float()
    loss = F.binary_cross_entropy_with_logits(logit, label)
    return loss, ((logit > 0).float() == label).float().mean()


def _epochs(run: _Run, expert, optimizer, precision, dataset, validation, bar, stop) -> dict | None:
    o = run.o
    batch_size = o["batch_size"]
    sums, count, tick = {"loss": 0.0, "accuracy": 0.0}, 0, time.perf_counter()
    last_validation = None
    expert.train()
    while run.samples < o["total_samples"]:
        epoch, start = divmod(run.step, run.steps_per_epoch)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_sampler=EpochBatches(
            epoch_order(len(dataset), o["seed"], epoch), batch_size, start, 0, 1),
            num_workers=o["num_workers"], pin_memory=run.device.type == "cuda",
            # its own generator: drawing from the global one would break bit-identical resume
            generator=torch.Generator().manual_seed(o["seed"] * 1_000_003 + epoch))
        for batch in loader:
            loss, accuracy = _loss(expert, batch, run.device, precision)
            precision.update(loss, optimizer, expert, _SCALER)
            run.step += 1
            run.samples += batch_size
            value = float(loss.detach())
            if not np.isfinite(value):
                raise TrainingError(
                    f"non-finite loss at step {run.step} (window {run.samples}) of "
                    f"{run.run_dir}; last good checkpoint: "
                    f"{run.last_good or 'none (no checkpoint saved yet)'}")
            sums["loss"] += value
            sums["accuracy"] += float(accuracy)
            count += 1
            bar.update(batch_size)
            if _crossed(run.samples, batch_size, o["log_every_samples"]):
                elapsed = time.perf_counter() - tick
                record = {"step": run.step, "samples": run.samples, "epoch": epoch,
                          "samples_per_second": count * batch_size / max(elapsed, 1e-9),
                          **{k: v / count for k, v in sums.items()}}
                _log_record(run.run_dir, record)
                bar.set_postfix({"loss": f"{record['loss']:.4f}"}, refresh=False)
                sums, count, tick = {"loss": 0.0, "accuracy": 0.0}, 0, time.perf_counter()
            if validation is not None and _crossed(run.samples, batch_size,
                                                   o["validation_every_samples"]):
                last_validation = _validate(run, expert, validation, precision)
                expert.train()
            done = run.samples >= o["total_samples"]
            if done or stop["signal"] or _crossed(run.samples, batch_size,
                                                  o["checkpoint_every_samples"]):
                run.last_good = _save_checkpoint(run, expert, optimizer, precision)
            if stop["signal"]:
                raise TrainingInterrupted(
                    f"{run.run_dir}: stopped by SIGTERM at window {run.samples}; checkpoint "
                    f"saved to {run.last_good}; rerun to resume")
            if done:
                break
    return last_validation


def _crossed(samples: int, batch_size: int, every: int) -> bool:
    return samples // every > (samples - batch_size) // every


@torch.no_grad()
def held_out_accuracy(expert, validation, *, device: torch.device | str = "cpu",
                      batch_size: int = 128, precision: Precision | None = None) -> dict:
    """In-sync vs off-sync accuracy (logit > 0 means "in sync") and BCE over `validation`."""
    device = torch.device(device)
    precision = precision or Precision(device, False)
    was_training = expert.training
    expert.eval()
    correct = {1.0: [], 0.0: []}
    losses = []
    for batch in DataLoader(validation, batch_size=batch_size, shuffle=False):
        faces, mel, label = expert_inputs(batch, device)
        with precision.autocast():
            logit = expert(faces, mel).float()
        losses.append(F.binary_cross_entropy_with_logits(logit, label, reduction="none").cpu())
        hits = ((logit > 0).float() == label).cpu()
        for value in correct:
            correct[value].append(hits[label.cpu() == value])
    expert.train(was_training)
    in_sync, off_sync = (torch.cat(correct[v]).float() for v in (1.0, 0.0))
    both = torch.cat([in_sync, off_sync])
    return {"accuracy": float(both.mean()), "in_sync_accuracy": float(in_sync.mean()),
            "off_sync_accuracy": float(off_sync.mean()), "loss": float(torch.cat(losses).mean()),
            "pairs": int(both.numel())}


def _validate(run: _Run, expert, validation, precision) -> dict:
    scores = held_out_accuracy(expert, validation, device=run.device, precision=precision)
    _log_record(run.run_dir, {"step": run.step, "samples": run.samples,
                              **{f"validation_{k}": v for k, v in scores.items()}})
    return scores


def _log_record(run_dir: Path, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    log.info("window %d: %s", record["samples"],
             ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[dict]:
    """A dict whose "signal" turns True on SIGTERM, for the block; the loop saves and stops."""
    stop = {"signal": False}
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: SIGTERM kills as usual
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=True))
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# --- checkpoints ----------------------------------------------------------------------------------


def _save_checkpoint(run: _Run, expert, optimizer, precision) -> Path:
    path = ckpt.checkpoint_path(run.checkpoints, run.samples)
    ckpt.save(path, {
        "kind": "syncnet-checkpoint", "model": "syncnet", "model_options": run.model_options,
        "config": run.config, "expert": expert.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": precision.scalers[_SCALER].state_dict(), "step": run.step,
        "samples": run.samples, "rng": rng.rng_state(),
        "data_order": {"seed": run.o["seed"], "epoch": run.step // run.steps_per_epoch,
                       "batch_in_epoch": run.step % run.steps_per_epoch},
        "provenance": provenance(), "saved_at": time.time()})
    ckpt.prune(run.checkpoints, run.o["keep_checkpoints"])
    return path


def _load_checkpoint(path: Path, device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch raises several types for truncated files
        raise InputError(path, f"not a readable torch checkpoint ({error})") from None
    if not isinstance(state, dict) or "expert" not in state:
        raise InputError(path, "not a sync expert checkpoint (no expert state)")
    return state


def _latest_loadable(run: _Run) -> tuple[Path | None, dict | None]:
    """The newest checkpoint that loads; a truncated newer one is skipped with a warning."""
    problems = []
    for path in reversed(ckpt.list_checkpoints(run.checkpoints)):
        try:
            return path, _load_checkpoint(path, run.device)
        except InputError as error:
            log.warning("skipping checkpoint %s: %s; trying the one before", path, error.problem)
            problems.append(str(error))
    if problems:
        raise LipsyncError(f"no checkpoint in {run.checkpoints} loads ({'; '.join(problems)}); "
                           "move them aside to start over")
    return None, None


def _resume(run: _Run, expert, optimizer, precision) -> None:
    run.resumed_from, state = _latest_loadable(run)
    run.last_good = run.resumed_from
    if state is None:
        return
    for key in _RESUME_KEYS:
        if state["config"].get(key) != run.config[key]:
            raise LipsyncError(f"{run.resumed_from}: was made with {key}="
                               f"{state['config'].get(key)!r}, this run has {run.config[key]!r}; "
                               "use another output or delete the checkpoints")
    expert.load_state_dict(state["expert"])
    optimizer.load_state_dict(state["optimizer"])
    precision.scalers[_SCALER].load_state_dict(state["scaler"])
    run.step, run.samples = state["step"], state["samples"]
    rng.set_rng_state(state["rng"])
    log.info("resumed from %s at window %d (step %d)", run.resumed_from, run.samples, run.step)


def _set_aside_stale_checkpoints(run: _Run) -> None:
    """Checkpoints of another training set file or other weight-defining options are moved
    aside (never deleted): a rerun after a change starts over, one after a kill resumes."""
    stat = os.stat(run.train_set)
    fingerprint = {"train_set": {"path": os.path.abspath(run.train_set), "size": stat.st_size,
                                 "mtime_ns": stat.st_mtime_ns},
                   **{key: run.config[key] for key in _RESUME_KEYS}}
    fingerprint = json.loads(json.dumps(fingerprint))
    path = run.run_dir / "checkpoints.fingerprint.json"
    if run.checkpoints.is_dir() and any(run.checkpoints.iterdir()):
        previous = json.loads(path.read_text()) if path.exists() else None
        if previous != fingerprint:
            stale = run.run_dir / f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}"
            run.checkpoints.rename(stale)
            log.info("training set or settings changed: %s moved to %s, starting over",
                     run.checkpoints, stale)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, fingerprint)


def export_expert(run: _Run, expert, validation: dict | None) -> Path:
    """The final expert file: weights, options, held-out clips and accuracy, provenance."""
    state = {k: v.detach().cpu() for k, v in expert.state_dict().items()}
    return ckpt.save(run.output, {
        "kind": "syncnet", "model": "syncnet", "model_options": run.model_options,
        "expert": state, "config": run.config, "step": run.step, "samples": run.samples,
        "validation": validation, "held_out_clips": [list(k) for k in run.held_out],
        "train_set": run.train_set, "provenance": provenance()})
