"""The training loop: one function trains every network the DAG trains, counted in samples and
resumable bit for bit.

`run_training(trainee, ...)` receives what it trains as a `Trainee` (a builder of the networks and
their loss scheme, batch preparation, a validation metric, which networks the output file holds)
and owns everything else once: data order, resume from the newest checkpoint, save on SIGTERM,
stop on a non-finite loss, snapshots, log.jsonl, tensorboard, progress, validation, data-parallel
processes (lipsync.training.distributed) and mixed precision (lipsync.training.precision). Its options are the table
of lipsync.training.options. The generator/discriminator pairs of lipsync.models.registry are trained
by `training_loop`/`train_run` (`lipsync train`), the sync expert by lipsync.experts.sync.train
(`lipsync train-syncnet`); docs/ARCHITECTURE.md ("Training") says how to add a network.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from lipsync.core.device import pick_device
from lipsync.core.errors import InputError, LipsyncError, TrainingError
from lipsync.core.io import atomic_path, write_json
from lipsync.core.logs import get_logger
from lipsync.core.options import describe, resolve
from lipsync.core.progress import progress
from lipsync.core.provenance import describe as provenance
from lipsync.data.dataset import collate, model_inputs
from lipsync.metrics.kernels import psnr_torch, ssim_torch
from lipsync.models import registry
from lipsync.training import checkpoint as ckpt
from lipsync.training import distributed, rng
from lipsync.training.options import DEFAULTS, OPTIONS
from lipsync.training.precision import Precision

log = get_logger("lipsync.training.loop")

# Options that must match a checkpoint to resume from it (others, e.g. total_samples, may change);
# a trainee adds its own (Trainee.settings).
_RESUME_KEYS = ("model", "model_options", "seed", "batch_size")


class TrainingInterrupted(TrainingError):
    """SIGTERM (e.g. SLURM's time limit) stopped training after a checkpoint was saved."""


# --- what the loop trains -------------------------------------------------------------------------


class LossScheme(Protocol):
    """A network's objective and update order: what one batch does to the networks."""

    def optimizers(self, networks: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per network that learns, under the network's name."""

    def train_step(self, batch: dict, step: int, *, seed: int, networks: dict[str, nn.Module],
                   optimizers: dict[str, torch.optim.Optimizer], precision: Precision
                   ) -> dict[str, torch.Tensor]:
        """Update the networks on one batch (through `precision.update(loss, optimizer, network,
        name)`); return the batch's losses as 0-d tensors, by name (logged, checked finite)."""


@dataclass
class Trainee:
    """What the loop trains: everything specific to one kind of network.

    `build()` returns the freshly initialised networks by name and the loss scheme that trains
    them (the loop seeds before calling it). `prepare(batch, device)` turns a collated batch into
    what the scheme and `validate` read. `validate(networks, dataset, *, device, precision)`
    scores the networks on the validation set (dict of floats) and leaves their train/eval mode
    as it found it. `exports` are the networks written to the output file and to snapshots, whose
    "kind" is `kind`; `info` adds entries to that file. `settings`: options outside the loop's
    table that fix the weights (saved in the config; a checkpoint made with others is not resumed).
    """

    model: str
    model_options: dict
    build: Callable[[], tuple[dict[str, nn.Module], LossScheme]]
    prepare: Callable[[dict, torch.device], dict]
    exports: tuple[str, ...]
    kind: str
    validate: Callable[..., dict] | None = None
    collate: Callable | None = None
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


# --- data order -----------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of `epoch`: a permutation depending only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class EpochBatches(Sampler):
    """This rank's share of each global batch of one epoch, starting at batch `start`.

    Global batch k is order[k*B:(k+1)*B]; rank r takes its r-th contiguous slice, so the ranks
    together see exactly what a single process would. The incomplete last batch is dropped.
    """

    def __init__(self, order: torch.Tensor, batch_size: int, start: int, rank: int, world: int):
        self.order, self.batch_size, self.start = order, batch_size, start
        self.per_rank = batch_size // world
        self.offset = rank * self.per_rank

    def __len__(self) -> int:
        return len(self.order) // self.batch_size - self.start

    def __iter__(self):
        for k in range(self.start, len(self.order) // self.batch_size):
            first = k * self.batch_size + self.offset
            yield self.order[first:first + self.per_rank].tolist()


# --- the loop -------------------------------------------------------------------------------------


def run_training(trainee: Trainee, *, train_set: Dataset, run_dir: str | os.PathLike,
                 output: str | os.PathLike, validation_set: Dataset | None = None,
                 record: dict | None = None, **options) -> dict:
    """Train `trainee` on `train_set` until `total_samples` samples; resume from run_dir's newest
    checkpoint that loads.

    `validation_set` is scored by `trainee.validate` (rank 0 only). `record`: entries added to the
    run's config (e.g. the training set's path), saved in training_options.json and every file.
    `options`: the loop options below; an unknown one or a value out of range is a LipsyncError
    naming it. Writes run_dir/checkpoints/, run_dir/training_options.json, run_dir/log.jsonl,
    run_dir/tensorboard/, run_dir/snapshots/ and the trained networks `trainee.exports` to
    `output`. Returns a summary dict. Raises TrainingError on a non-finite loss (naming the last
    good checkpoint) and TrainingInterrupted after saving on SIGTERM.

    Options (lipsync.training.options.OPTIONS):
    """
    o = resolve(OPTIONS, options, "training_loop")
    rank, world, local_rank = distributed.distributed_environment()
    if o["batch_size"] % world:
        raise LipsyncError(f"training option batch_size: {o['batch_size']} is not divisible by "
                           f"{world} processes")
    device = pick_device(o["device"], local_rank)
    with distributed.process_group(rank, world, device):
        run = _Run(run_dir=Path(run_dir), output=Path(output), trainee=trainee, o=o,
                   device=device, rank=rank, world=world)
        run.config = {"model": trainee.model, "model_options": trainee.model_options, **o,
                      **trainee.settings, "device": str(device), "world_size": world,
                      **(record or {})}
        return _train(run, train_set, validation_set if run.main else None)


run_training.__doc__ += "\n" + "\n".join("    " + line for line in describe(OPTIONS).split("\n"))


@dataclass
class _Run:
    """What one training run knows: its settings and progress."""

    run_dir: Path
    output: Path
    trainee: Trainee
    o: dict
    device: torch.device
    rank: int
    world: int
    config: dict = field(default_factory=dict)
    step: int = 0
    samples: int = 0
    steps_per_epoch: int = 0
    last_good: Path | None = None
    resumed_from: Path | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def resume_keys(self) -> tuple[str, ...]:
        return _RESUME_KEYS + tuple(self.trainee.settings)


@dataclass
class _Networks:
    networks: dict[str, nn.Module]
    scheme: LossScheme
    optimizers: dict[str, torch.optim.Optimizer]
    precision: Precision

    def train(self) -> None:
        for network in self.networks.values():
            network.train()


def _train(run: _Run, dataset: Dataset, validation: Dataset | None) -> dict:
    o = run.o
    run.steps_per_epoch = len(dataset) // o["batch_size"]
    if run.steps_per_epoch == 0:
        raise InputError(run.config.get("train_set") or "training set",
                         f"{len(dataset)} samples, fewer than one batch of {o['batch_size']}")
    nets = _build(run)
    _resume(run, nets)
    if run.main:
        write_json(run.run_dir / "training_options.json", run.config)
    writer = _tensorboard(run)
    bar = progress(total=o["total_samples"], initial=min(run.samples, o["total_samples"]),
                   unit="sample", disable=not (run.main and o["progress_bar"]),
                   desc=f"train {run.trainee.model}")
    try:
        with _sigterm_flag() as stop:
            last_validation = _epochs(run, nets, dataset, validation, writer, bar, stop)
        if validation is not None:
            last_validation = _validate(run, nets, validation, writer)
        if run.main:
            _snapshot(run, nets)  # a run resumed at or past its end trains no batch
            _export(run, nets, run.output, validation=last_validation)
            log.info("trained %s for %d samples; written to %s", run.trainee.model, run.samples,
                     run.output)
        distributed.barrier(run.world)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return {"output": str(run.output), "step": run.step, "samples": run.samples,
            "checkpoint": str(run.last_good) if run.last_good else None,
            "validation": last_validation,
            "resumed_from": str(run.resumed_from) if run.resumed_from else None}


def _build(run: _Run) -> _Networks:
    rng.seed_all(run.o["seed"])  # same initial weights on every rank
    networks, scheme = run.trainee.build()
    networks = {name: network.to(run.device) for name, network in networks.items()}
    if run.world > 1 and run.device.type == "cuda" and run.o["sync_batchnorm"]:
        networks = {name: nn.SyncBatchNorm.convert_sync_batchnorm(network)
                    for name, network in networks.items()}
    return _Networks(networks, scheme, scheme.optimizers(networks),
                     Precision(run.device, run.o["mixed_precision"]))


def _resume(run: _Run, nets: _Networks) -> None:
    """Load the newest checkpoint into `nets` and `run`, or seed this rank's fresh streams."""
    seed = run.o["seed"]
    # the newest checkpoint that loads: a truncated newer one is skipped, with a warning
    run.resumed_from, state = ckpt.latest_loadable_checkpoint(run.checkpoints,
                                                              map_location=run.device)
    run.last_good = run.resumed_from
    if run.resumed_from is None:
        # Per-rank streams for in-step randomness (e.g. WGAN-GP's interpolation weights).
        rng.seed_all(rng.rank_seed(seed, run.rank))
        return
    for key in run.resume_keys:
        if state["config"].get(key) != run.config[key]:
            raise LipsyncError(
                f"{run.resumed_from}: was made with {key}={state['config'].get(key)!r}, this run "
                f"has {run.config[key]!r}; use another run_dir or delete the checkpoints")
    for name, network in nets.networks.items():
        network.load_state_dict(state["networks"][name])
    for name, optimizer in nets.optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    for name, saved in state["scalers"].items():
        nets.precision.scaler(name).load_state_dict(saved)
    run.step, run.samples = state["step"], state["samples"]
    if len(state["rng"]) == run.world:
        rng.set_rng_state(state["rng"][run.rank])
    else:
        log.warning("%s was saved by %d processes, now %d: fresh random streams",
                    run.resumed_from, len(state["rng"]), run.world)
        rng.seed_all(rng.rank_seed(seed, run.rank + 1, run.step))
    if run.main:
        log.info("resumed from %s at sample %d (step %d)", run.resumed_from, run.samples,
                 run.step)


def _tensorboard(run: _Run):
    if not run.main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run.run_dir / "tensorboard"))


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


def _save_checkpoint(run: _Run, nets: _Networks) -> Path:
    """The one checkpoint format: every network, optimizer and scaler by name, the counts, the
    config, each rank's random streams and provenance (lipsync.training.checkpoint loads it)."""
    states = distributed.all_gather(rng.rng_state(), run.world)
    path = ckpt.checkpoint_path(run.checkpoints, run.samples)
    if run.main:
        ckpt.save(path, {
            "kind": "checkpoint", "model": run.trainee.model,
            "model_options": run.trainee.model_options, "config": run.config,
            "networks": {name: n.state_dict() for name, n in nets.networks.items()},
            "optimizers": {name: opt.state_dict() for name, opt in nets.optimizers.items()},
            "scalers": {name: s.state_dict() for name, s in nets.precision.scalers.items()},
            "step": run.step, "samples": run.samples, "rng": states,
            "data_order": {"seed": run.o["seed"], "epoch": run.step // run.steps_per_epoch,
                           "batch_in_epoch": run.step % run.steps_per_epoch},
            "provenance": provenance(), "saved_at": time.time()})
        ckpt.prune(run.checkpoints, run.o["keep_checkpoints"])
    distributed.barrier(run.world)
    return path


def _epoch_loader(run: _Run, dataset, epoch: int, start: int) -> DataLoader:
    seed = run.o["seed"]
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    return DataLoader(
        dataset, batch_sampler=EpochBatches(epoch_order(len(dataset), seed, epoch),
                                            run.o["batch_size"], start, run.rank, run.world),
        num_workers=run.o["num_workers"], collate_fn=run.trainee.collate,
        pin_memory=run.device.type == "cuda",
        # Its own generator: the loader must not draw from the global RNG, or a resumed run
        # would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _crossed(samples: int, batch_size: int, every: int) -> bool:
    """Whether the last batch crossed a multiple of `every` samples."""
    return samples // every > (samples - batch_size) // every


def _epochs(run: _Run, nets: _Networks, dataset, validation, writer, bar, stop: dict):
    """Train until total_samples; returns the last validation scores (None if none ran)."""
    o = run.o
    batch_size = o["batch_size"]
    meter = _LossMeter()
    last_validation = None
    nets.train()
    while run.samples < o["total_samples"]:
        epoch, start = divmod(run.step, run.steps_per_epoch)
        step_before = run.step
        for batch in _epoch_loader(run, dataset, epoch, start):
            losses = nets.scheme.train_step(
                run.trainee.prepare(batch, run.device), run.step, seed=o["seed"],
                networks=nets.networks, optimizers=nets.optimizers, precision=nets.precision)
            run.step += 1
            run.samples += batch_size
            values, stopping = _mean_losses(run, losses, stop["signal"])
            meter.add(values)
            bar.update(batch_size)
            if run.main and _crossed(run.samples, batch_size, o["log_every_samples"]):
                _log_record(run.run_dir, writer, meter.record(run, epoch, batch_size))
                bar.set_postfix(meter.postfix(), refresh=False)
                meter.reset()
            if validation is not None and _crossed(run.samples, batch_size,
                                                   o["validation_every_samples"]):
                last_validation = _validate(run, nets, validation, writer)
            if run.main:
                _snapshot(run, nets)
            done = run.samples >= o["total_samples"]
            if done or stopping or _crossed(run.samples, batch_size,
                                            o["checkpoint_every_samples"]):
                run.last_good = _save_checkpoint(run, nets)
            if stopping:
                raise TrainingInterrupted(
                    f"{run.run_dir}: stopped by SIGTERM at sample {run.samples}; checkpoint saved "
                    f"to {run.last_good}; rerun to resume")
            if done:
                break
        if run.step == step_before:
            # An epoch without a batch would loop for ever, deaf to SIGTERM (checked per batch).
            raise TrainingError(f"{run.run_dir}: epoch {epoch} gave no batch of "
                                f"{batch_size} from {len(dataset)} samples")
    return last_validation


def _mean_losses(run: _Run, losses: dict, stop_requested: bool) -> tuple[dict, bool]:
    """The batch's losses averaged over ranks, and whether any rank got SIGTERM; a non-finite
    loss stops training naming the last good checkpoint."""
    names = sorted(losses)
    packed = torch.stack([losses[k].float() for k in names]
                         + [torch.tensor(float(stop_requested), device=run.device)])
    packed = distributed.all_mean(packed, run.world).cpu()
    values = dict(zip(names, packed[:-1].tolist(), strict=True))
    bad = {k: v for k, v in values.items() if not np.isfinite(v)}
    if bad:
        raise TrainingError(
            f"non-finite loss at step {run.step} (sample {run.samples}) of {run.run_dir}: {bad}; "
            f"last good checkpoint: {run.last_good or 'none (no checkpoint saved yet)'}")
    return values, bool(packed[-1] > 0)


class _LossMeter:
    """Mean losses and throughput since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        # Per loss: WGAN-GP's generator losses exist only on every n_critic-th batch, so a mean
        # over all batches would understate them n_critic times.
        self.counts: dict[str, int] = {}
        self.count = 0
        self.tick = time.perf_counter()

    def add(self, values: dict) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1

    def record(self, run: _Run, epoch: int, batch_size: int) -> dict:
        elapsed = time.perf_counter() - self.tick
        return {"step": run.step, "samples": run.samples, "epoch": epoch,
                "samples_per_second": self.count * batch_size / max(elapsed, 1e-9),
                **{k: v / self.counts[k] for k, v in self.sums.items()}}

    def postfix(self) -> dict:
        return {k: f"{v / self.counts[k]:.4f}" for k, v in self.sums.items()}


def _log_record(run_dir: Path, writer, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key not in ("step", "samples", "epoch"):
                writer.add_scalar(key, value, record["samples"])
    log.info("sample %d: %s", record["samples"],
             ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))


def _validate(run: _Run, nets: _Networks, validation, writer) -> dict | None:
    if run.trainee.validate is None:
        return None
    scores = run.trainee.validate(nets.networks, validation, device=run.device,
                                  precision=nets.precision)
    _log_record(run.run_dir, writer, {"step": run.step, "samples": run.samples,
                                      **{f"validation_{k}": float(v) for k, v in scores.items()}})
    return scores


# --- output files ---------------------------------------------------------------------------------


def network_file(*, kind: str, model: str, model_options: dict,
                 networks: dict[str, nn.Module], config: dict, step: int, samples: int,
                 validation: dict | None = None, **info) -> dict:
    """The state of a trained-network file (final output or snapshot): the weights of
    `networks` on CPU by name, what made them and provenance; lipsync.training.checkpoint loads it."""
    weights = {name: {k: v.detach().cpu() for k, v in network.state_dict().items()}
               for name, network in networks.items()}
    return {"kind": kind, "model": model, "model_options": model_options, "networks": weights,
            "config": config, "step": step, "samples": samples, "validation": validation,
            **info, "provenance": provenance()}


def _export(run: _Run, nets: _Networks, path: Path, validation: dict | None = None) -> Path:
    trainee = run.trainee
    return ckpt.save(path, network_file(
        kind=trainee.kind, model=trainee.model, model_options=trainee.model_options,
        networks={name: nets.networks[name] for name in trainee.exports}, config=run.config,
        step=run.step, samples=run.samples, validation=validation, **trainee.info))


def snapshot_samples(total_samples: int, snapshots: int) -> list[int]:
    """The sample counts at which snapshot k = 1..snapshots is taken: k/(snapshots+1) of training."""
    return [total_samples * k // (snapshots + 1) for k in range(1, snapshots + 1)]


def snapshot_path(run_dir: Path, k: int, at: int) -> Path:
    """Snapshot k taken at `at` samples: the name holds the sample count, so a run whose length or
    snapshot count changed never reuses a snapshot of another schedule."""
    return Path(run_dir) / "snapshots" / f"{k}-at-{at}.pt"


def publish_snapshots(run_dir: Path, total_samples: int, snapshots: int,
                      folder: str | os.PathLike) -> list[Path]:
    """Copy this schedule's snapshots to `folder`/{k}.pt (the workflow's declared output)."""
    published = []
    for k, at in enumerate(snapshot_samples(total_samples, snapshots), start=1):
        source = snapshot_path(run_dir, k, at)
        if not source.is_file():
            raise TrainingError(f"{source}: snapshot {k} is missing (removed after training "
                                "passed its point?); delete the run's checkpoints to retrain")
        target = Path(folder) / f"{k}.pt"
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        published.append(target)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return published


def _snapshot(run: _Run, nets: _Networks) -> None:
    """Export the networks at each snapshot point this run has reached and not yet written.

    A run resumed past a point it never wrote (its length changed) writes that snapshot at the
    first batch after resuming; the file records the samples it really had.
    """
    o = run.o
    for k, at in enumerate(snapshot_samples(o["total_samples"], o["snapshots"]), start=1):
        if at <= run.samples:
            path = snapshot_path(run.run_dir, k, at)
            if not path.exists():
                _export(run, nets, path)
                log.info("snapshot %d of %s at sample %d -> %s", k, run.run_dir, run.samples,
                         path)


def set_aside_stale_checkpoints(run_dir: str | os.PathLike, train_set: str | os.PathLike,
                                settings: dict) -> None:
    """Keep checkpoints only while they belong to this job's training set and settings.

    Snakemake reruns a training job for two reasons: its last attempt was killed (resume from
    the newest checkpoint) or its inputs or settings changed (start over). A fingerprint of the
    training set file and `settings` (the options that fix the weights) tells the two apart;
    checkpoints of another fingerprint are moved aside, never deleted.
    """
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    stat = os.stat(train_set)
    fingerprint = json.loads(json.dumps({
        "train_set": {"path": os.path.abspath(train_set), "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns}, **settings}))
    fingerprint_path = run_dir / "checkpoints.fingerprint.json"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        previous = (json.loads(fingerprint_path.read_text())
                    if fingerprint_path.exists() else None)
        if previous != fingerprint:
            stale = run_dir / f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}"
            checkpoints.rename(stale)
            log.info("training set or settings changed since %s was written: moved to %s, "
                     "starting over", checkpoints, stale)
    write_json(fingerprint_path, fingerprint)


# --- the generator/discriminator pairs (`lipsync train`) ------------------------------------------


def _open_dataset(data, seed: int, what: str):
    if isinstance(data, Dataset):
        return data
    path = Path(data)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    from lipsync.data.dataset import LipSyncDataset

    # uint8 items: a quarter of the bytes cross from the workers; scaled on the device.
    return LipSyncDataset(path, seed=seed, uint8=True)


def _as_frames(images: torch.Tensor) -> torch.Tensor:
    """N x 3 x S x S images in [0, 1] as the uint8 N x S x S x 3 frames the metrics score."""
    return torch.round(images.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1)


@torch.no_grad()
def evaluate(generator, dataset, *, device: torch.device | str = "cpu", batch_size: int = 64,
             precision: Precision | None = None) -> dict:
    """Mean L1 (images in [0, 1]), SSIM and PSNR of a generator over `dataset`.

    SSIM and PSNR are lipsync.metrics.ssim_psnr's (scikit-image's protocol on uint8 frames, as
    the evaluation reports them); the PSNR mean is over finite values (identical frames: inf).
    `generator=None` scores the identity baseline: the reference frame returned unchanged.
    """
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    was_training = generator.training if generator is not None else False
    if generator is not None:
        generator.eval()
    l1, ssim, psnr = [], [], []
    for batch in loader:
        batch = model_inputs(batch, device)
        if generator is None:
            output = batch["reference"]
        else:
            with precision.autocast() if precision else contextlib.nullcontext():
                output = generator(batch["generator_input"], batch["mel"])
        # Quantised as the generated test set will be (uint8), so scores match what is stored.
        generated, truth = _as_frames(output.float()), _as_frames(batch["target"])
        l1.append((generated.float() - truth.float()).abs().flatten(1).mean(dim=1).cpu() / 255)
        ssim.append(ssim_torch(generated, truth, device=device))
        psnr.append(psnr_torch(generated, truth, device=device))
    if generator is not None and was_training:
        generator.train()
    count = sum(len(values) for values in l1)
    if count == 0:
        return {"l1": 0.0, "ssim": 0.0, "psnr": 0.0, "samples": 0}
    psnr = np.concatenate(psnr)
    finite = psnr[np.isfinite(psnr)]
    return {"l1": float(torch.cat(l1).double().mean()),
            "ssim": float(np.concatenate(ssim).mean()),
            "psnr": float(finite.mean()) if finite.size else float("inf"),  # all identical: inf
            "samples": count}


def validation_subset(dataset, samples: int):
    """`samples` evenly spaced items of `dataset` (all when it has fewer, or when 0)."""
    n = len(dataset)
    if samples <= 0 or samples >= n:
        return dataset
    return Subset(dataset, np.linspace(0, n - 1, samples).round().astype(int).tolist())


def _validate_generator(networks: dict, dataset, *, device: torch.device,
                        precision: Precision) -> dict:
    return evaluate(networks["generator"], dataset, device=device, precision=precision)


def generator_trainee(model: str = "lipgan", model_options: dict | None = None) -> Trainee:
    """A generator and its discriminator or critic from lipsync.models.registry, trained by the
    model's scheme on LipSyncDataset items; the output file holds the generator."""
    model_options = registry.resolve_options(model, model_options)

    def build():
        pair = registry.build(model, model_options)
        return {"generator": pair.generator, "discriminator": pair.discriminator}, pair.scheme

    return Trainee(model=model, model_options=model_options, build=build, prepare=model_inputs,
                   exports=("generator",), kind="generator", validate=_validate_generator,
                   collate=collate)


def training_loop(*, train_set, run_dir, model: str = "lipgan", model_options: dict | None = None,
                  validation_set=None, output=None, **options) -> dict:
    """Train generator/discriminator pair `model` on `train_set` with `run_training`.

    `train_set`/`validation_set`: a LipSyncDataset (or any Dataset with the same item dict) or
    the path of a packed HDF5 split; `validation_samples` evenly spaced items of the validation
    set are scored. `model_options`: see `registry.option_table`. `options`: run_training's.
    The generator goes to `output` (default run_dir/generator.pt).
    """
    o = resolve(OPTIONS, options, "training_loop")
    trainee = generator_trainee(model, model_options)
    dataset = _open_dataset(train_set, o["seed"], "training set")
    validation = None
    if validation_set is not None:
        validation = validation_subset(_open_dataset(validation_set, o["seed"], "validation set"),
                                       o["validation_samples"])
    record = {"train_set": None if isinstance(train_set, Dataset) else str(train_set),
              "validation_set": (None if validation_set is None
                                 or isinstance(validation_set, Dataset) else str(validation_set))}
    return run_training(trainee, train_set=dataset, run_dir=run_dir, validation_set=validation,
                        output=output if output is not None else Path(run_dir) / "generator.pt",
                        record=record, **o)


def export_generator(output, generator, model: str, model_options: dict, config: dict,
                     step: int, samples: int, validation: dict | None = None) -> Path:
    """Write a generator file (as a run's output): weights plus model name, options, config and
    provenance, in the format lipsync.training.checkpoint.load_generator reads."""
    return ckpt.save(output, network_file(
        kind="generator", model=model, model_options=model_options,
        networks={"generator": generator}, config=config, step=step, samples=samples,
        validation=validation))


def train_run(train_set, run_dir, output, *, options: dict, validation_set=None,
              threads: int = 1, snapshots_dir: str | os.PathLike | None = None) -> dict:
    """CLI entry (`lipsync train`): options = {"model", "model_options", any training_loop key};
    the snapshots of the run are copied to `snapshots_dir`/{k}.pt when given."""
    options = dict(options)
    model = options.pop("model", "lipgan")
    model_options = options.pop("model_options", None)
    # Checked before anything touches the run folder.
    options = resolve(OPTIONS, options, "training_loop") | {
        "num_workers": options.get("num_workers", max(0, threads))}
    model_options = registry.resolve_options(model, model_options)
    if not Path(train_set).is_file():
        raise InputError(train_set, "training set not found")
    # Rank 0 alone; the other ranks wait for it in init_process_group's barrier.
    if distributed.distributed_environment()[0] == 0:
        set_aside_stale_checkpoints(run_dir, train_set, {
            "model": model, "model_options": model_options,
            **{key: options[key] for key in _RESUME_KEYS[2:]}})
    summary = training_loop(train_set=train_set, run_dir=run_dir, validation_set=validation_set,
                            output=output, model=model, model_options=model_options, **options)
    if snapshots_dir is not None and distributed.distributed_environment()[0] == 0:
        publish_snapshots(Path(run_dir), options["total_samples"], options["snapshots"],
                          snapshots_dir)
    return summary


__all__ = ["DEFAULTS", "OPTIONS", "LossScheme", "Trainee", "TrainingInterrupted", "evaluate",
           "export_generator", "generator_trainee", "network_file", "run_training",
           "set_aside_stale_checkpoints", "training_loop", "train_run"]
