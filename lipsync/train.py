"""The training loop: one function for every model, counted in samples, resumable bit for bit.

`training_loop` trains the generator/discriminator pair of `lipsync.models.registry` on a
LipSyncDataset, saving self-describing checkpoints; a rerun resumes from the newest one.
Under torchrun or srun (several processes) it trains data-parallel with torch.distributed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from lipsync import checkpoint as ckpt
from lipsync.data.dataset import collate, model_inputs
from lipsync.errors import InputError, LipsyncError, TrainingError
from lipsync.io import write_json
from lipsync.logs import get_logger
from lipsync.models import registry
from lipsync.models.losses import Precision
from lipsync.progress import progress
from lipsync.provenance import describe

log = get_logger("lipsync.train")

# Keyword defaults of training_loop (the paper publishes neither epochs nor schedule).
DEFAULTS = {
    "model": "lipgan",
    "model_options": None,
    "seed": 0,
    # LipGAN: 96 per GPU. Here the global batch, split evenly over the ranks.
    "batch_size": 96,
    # About 7.4 epochs of GRIDSmall (~670 k samples): unpublished, chosen to fit a day on one GPU.
    "total_samples": 5_000_000,
    # LipGAN saved every 1000 batches of 96.
    "checkpoint_every_samples": 96_000,
    "keep_checkpoints": 3,
    "validation_every_samples": 192_000,
    "validation_samples": 1024,
    "log_every_samples": 9_600,
    "num_workers": 2,
    "mixed_precision": True,
    "device": "auto",
    # Multi-GPU: BatchNorm statistics over the global batch (as a single process would see).
    "sync_batchnorm": True,
    "progress_bar": True,
}

# Options that must match a checkpoint to resume from it (others, e.g. total_samples, may change).
_RESUME_KEYS = ("model", "model_options", "seed", "batch_size")


class TrainingInterrupted(TrainingError):
    """SIGTERM (e.g. SLURM's time limit) stopped training after a checkpoint was saved."""


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


def _open_dataset(data, seed: int, what: str):
    if isinstance(data, Dataset):
        return data
    path = Path(data)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    from lipsync.data.dataset import LipSyncDataset

    # uint8 items: a quarter of the bytes cross from the workers; scaled on the device.
    return LipSyncDataset(path, seed=seed, uint8=True)


# --- distributed ----------------------------------------------------------------------------------


def distributed_environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's or srun's environment; (0, 1, 0) otherwise."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        # srun without torchrun: rendezvous on this node (single-node jobs, see the SLURM notes).
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(12000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        return (int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                int(env.get("SLURM_LOCALID", "0")))
    return 0, 1, 0


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _all_mean(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values)
        values /= world
    return values


# --- RNG state ------------------------------------------------------------------------------------


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- validation -----------------------------------------------------------------------------------


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, on each RGB channel).

    A small local version for monitoring; lipsync.metrics owns the reference-checked one.
    """
    coords = torch.arange(11, dtype=torch.float32, device=x.device) - 5
    g = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(x.shape[1], 1, 11, 11).contiguous()

    def blur(t):
        return F.conv2d(t, window, groups=x.shape[1])

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
             / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    return value.flatten(1).mean(dim=1)


@torch.no_grad()
def evaluate(generator, dataset, *, device: torch.device | str = "cpu", batch_size: int = 64,
             precision: Precision | None = None) -> dict:
    """Mean L1, SSIM and PSNR (images in [0, 1]) of a generator over `dataset`.

    `generator=None` scores the identity baseline: the reference frame returned unchanged.
    """
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    was_training = generator.training if generator is not None else False
    if generator is not None:
        generator.eval()
    totals = {"l1": 0.0, "ssim": 0.0, "psnr": 0.0}
    count = 0
    for batch in loader:
        batch = model_inputs(batch, device)
        target = batch["target"]
        if generator is None:
            output = batch["reference"]
        else:
            with precision.autocast() if precision else torch.autocast("cpu", enabled=False):
                output = generator(batch["generator_input"], batch["mel"])
            output = output.float()
        # Quantise as the generated test set will be (uint8), so scores match what is stored.
        output = torch.round(output.clamp(0, 1) * 255) / 255
        mse = ((output - target) ** 2).flatten(1).mean(dim=1)
        totals["l1"] += (output - target).abs().flatten(1).mean(dim=1).sum().item()
        totals["ssim"] += ssim(output, target).sum().item()
        totals["psnr"] += (10 * torch.log10(1.0 / mse.clamp(min=1e-10))).sum().item()
        count += target.shape[0]
    if generator is not None and was_training:
        generator.train()
    return {name: value / max(count, 1) for name, value in totals.items()} | {"samples": count}


def validation_subset(dataset, samples: int):
    """`samples` evenly spaced items of `dataset` (all when it has fewer)."""
    n = len(dataset)
    if samples <= 0 or samples >= n:
        return dataset
    return Subset(dataset, np.linspace(0, n - 1, samples).round().astype(int).tolist())


# --- the loop -------------------------------------------------------------------------------------


def training_loop(*, train_set, run_dir, model: str = "lipgan", model_options: dict | None = None,
                  seed: int = 0, batch_size: int = 96, total_samples: int = 5_000_000,
                  checkpoint_every_samples: int = 96_000, keep_checkpoints: int = 3,
                  validation_set=None, validation_every_samples: int = 192_000,
                  validation_samples: int = 1024, log_every_samples: int = 9_600,
                  num_workers: int = 2, mixed_precision: bool | str = True, device: str = "auto",
                  sync_batchnorm: bool = True, progress_bar: bool = True,
                  output=None) -> dict:
    """Train `model` on `train_set` until `total_samples` samples; resume from run_dir's newest
    checkpoint. Defaults are documented in DEFAULTS.

    `train_set`/`validation_set`: a LipSyncDataset (or any Dataset with the same item dict) or
    the path of a packed HDF5 split. Writes run_dir/checkpoints/, run_dir/training_options.json,
    run_dir/log.jsonl, run_dir/tensorboard/ and the final generator to `output` (default
    run_dir/generator.pt). Returns a summary dict. Raises TrainingError on a non-finite loss
    (naming the last good checkpoint) and TrainingInterrupted after saving on SIGTERM.
    """
    run_dir = Path(run_dir)
    output = Path(output) if output is not None else run_dir / "generator.pt"
    rank, world, local_rank = distributed_environment()
    own_group = False
    device = _pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
        own_group = True
    try:
        return _train(train_set=train_set, run_dir=run_dir, output=output, model=model,
                      model_options=model_options, seed=seed, batch_size=batch_size,
                      total_samples=total_samples,
                      checkpoint_every_samples=checkpoint_every_samples,
                      keep_checkpoints=keep_checkpoints, validation_set=validation_set,
                      validation_every_samples=validation_every_samples,
                      validation_samples=validation_samples,
                      log_every_samples=log_every_samples, num_workers=num_workers,
                      mixed_precision=mixed_precision, device=device,
                      sync_batchnorm=sync_batchnorm, progress_bar=progress_bar,
                      rank=rank, world=world)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(*, train_set, run_dir: Path, output: Path, model, model_options, seed, batch_size,
           total_samples, checkpoint_every_samples, keep_checkpoints, validation_set,
           validation_every_samples, validation_samples, log_every_samples, num_workers,
           mixed_precision, device, sync_batchnorm, progress_bar, rank, world) -> dict:
    if batch_size % world:
        raise LipsyncError(f"batch_size {batch_size} is not divisible by {world} processes")
    main = rank == 0
    checkpoints = run_dir / "checkpoints"
    resolved_model_options = registry.resolve_options(model, model_options)
    config = {"model": model, "model_options": resolved_model_options, "seed": seed,
              "batch_size": batch_size, "total_samples": total_samples,
              "checkpoint_every_samples": checkpoint_every_samples,
              "keep_checkpoints": keep_checkpoints,
              "validation_every_samples": validation_every_samples,
              "validation_samples": validation_samples, "log_every_samples": log_every_samples,
              "num_workers": num_workers, "mixed_precision": mixed_precision,
              "device": str(device), "sync_batchnorm": sync_batchnorm, "world_size": world,
              "train_set": None if isinstance(train_set, Dataset) else str(train_set),
              "validation_set": (None if validation_set is None or isinstance(validation_set, Dataset)
                                 else str(validation_set))}

    dataset = _open_dataset(train_set, seed, "training set")
    n = len(dataset)
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise InputError(config["train_set"] or "training set",
                         f"{n} samples, fewer than one batch of {batch_size}")
    validation = None
    if validation_set is not None and main:
        validation = validation_subset(_open_dataset(validation_set, seed, "validation set"),
                                       validation_samples)

    _seed_all(seed)  # same initial weights on every rank
    pair = registry.build(model, resolved_model_options)
    generator, discriminator = pair.generator.to(device), pair.discriminator.to(device)
    if world > 1 and device.type == "cuda" and sync_batchnorm:
        generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(generator)
    optimizers = pair.scheme.optimizers(generator, discriminator)
    precision = Precision(device, mixed_precision)
    step = samples = 0
    resumed_from = ckpt.latest_checkpoint(checkpoints)
    if resumed_from is not None:
        state = ckpt.load(resumed_from, map_location=device)
        for key in _RESUME_KEYS:
            if state["config"].get(key) != config[key]:
                raise LipsyncError(
                    f"{resumed_from}: was made with {key}={state['config'].get(key)!r}, this run "
                    f"has {config[key]!r}; use another run_dir or delete the checkpoints")
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for which, saved in state["scalers"].items():
            precision.scalers[which].load_state_dict(saved)
        step, samples = state["step"], state["samples"]
        if len(state["rng"]) == world:
            _set_rng_state(state["rng"][rank])
        else:
            log.warning("%s was saved by %d processes, now %d: fresh random streams",
                        resumed_from, len(state["rng"]), world)
            _seed_all(seed + 7919 * (rank + 1) + step)
        if main:
            log.info("resumed from %s at sample %d (step %d)", resumed_from, samples, step)
    else:
        # Per-rank streams for in-step randomness (e.g. WGAN-GP's interpolation weights).
        _seed_all(seed + 7919 * rank)
    if main:
        write_json(run_dir / "training_options.json", config)

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    last_good = resumed_from

    def save_checkpoint() -> Path:
        rng = [None] * world
        if world > 1:
            dist.all_gather_object(rng, _rng_state())
        else:
            rng = [_rng_state()]
        path = ckpt.checkpoint_path(checkpoints, samples)
        if main:
            ckpt.save(path, {
                "model": model, "model_options": resolved_model_options, "config": config,
                "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers],
                "scalers": {k: s.state_dict() for k, s in precision.scalers.items()},
                "step": step, "samples": samples, "rng": rng,
                "data_order": {"seed": seed, "epoch": step // steps_per_epoch,
                               "batch_in_epoch": step % steps_per_epoch},
                "provenance": describe(), "saved_at": time.time()})
            ckpt.prune(checkpoints, keep_checkpoints)
        if world > 1:
            dist.barrier()
        return path

    stop = {"signal": False}
    previous_handler = None
    try:
        previous_handler = signal.signal(signal.SIGTERM,
                                         lambda signum, frame: stop.update(signal=True))
    except ValueError:  # not the main thread: no handler, SIGTERM then kills as usual
        pass

    bar = progress(total=total_samples, initial=min(samples, total_samples), unit="sample",
                   disable=not (main and progress_bar), desc=f"train {model}")
    sums: dict[str, float] = {}
    count = 0
    tick = time.perf_counter()
    last_validation = None
    generator.train()
    discriminator.train()
    try:
        while samples < total_samples:
            epoch, start = divmod(step, steps_per_epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset, batch_sampler=EpochBatches(epoch_order(n, seed, epoch), batch_size,
                                                    start, rank, world),
                num_workers=num_workers, collate_fn=collate, pin_memory=device.type == "cuda",
                # Its own generator: the loader must not draw from the global RNG, or a resumed
                # run would drift from an uninterrupted one.
                generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for batch in loader:
                batch = model_inputs(batch, device)
                losses = pair.scheme.train_step(
                    batch, step, seed=seed, generator=generator, discriminator=discriminator,
                    optimizers=optimizers, precision=precision)
                step += 1
                samples += batch_size
                names = sorted(losses)
                packed = torch.stack([losses[k].float() for k in names]
                                     + [torch.tensor(float(stop["signal"]), device=device)])
                packed = _all_mean(packed, world).cpu()
                values = dict(zip(names, packed[:-1].tolist(), strict=True))
                bad = {k: v for k, v in values.items() if not np.isfinite(v)}
                if bad:
                    raise TrainingError(
                        f"non-finite loss at step {step} (sample {samples}) of {run_dir}: {bad}; "
                        f"last good checkpoint: {last_good or 'none (no checkpoint saved yet)'}")
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(batch_size)
                boundary = samples - batch_size
                if samples // log_every_samples > boundary // log_every_samples and main:
                    elapsed = time.perf_counter() - tick
                    record = {"step": step, "samples": samples, "epoch": epoch,
                              "samples_per_second": count * batch_size / max(elapsed, 1e-9)}
                    record.update({k: v / count for k, v in sums.items()})
                    _log_record(run_dir, writer, record)
                    bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()
                                     if k.startswith("g_")}, refresh=False)
                    sums, count, tick = {}, 0, time.perf_counter()
                if (validation is not None
                        and samples // validation_every_samples > boundary // validation_every_samples):
                    last_validation = _validate(generator, validation, device, precision,
                                                run_dir, writer, step, samples)
                done = samples >= total_samples
                if (done or packed[-1] > 0
                        or samples // checkpoint_every_samples
                        > boundary // checkpoint_every_samples):
                    last_good = save_checkpoint()
                if packed[-1] > 0:
                    raise TrainingInterrupted(
                        f"{run_dir}: stopped by SIGTERM at sample {samples}; checkpoint saved to "
                        f"{last_good}; rerun to resume")
                if done:
                    break
        if validation is not None and main:
            last_validation = _validate(generator, validation, device, precision, run_dir,
                                        writer, step, samples)
        if main:
            export_generator(output, generator, model, resolved_model_options, config, step,
                             samples, validation=last_validation)
            log.info("trained %s for %d samples; generator written to %s", model, samples, output)
        if world > 1:
            dist.barrier()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return {"output": str(output), "step": step, "samples": samples,
            "checkpoint": str(last_good) if last_good else None, "validation": last_validation,
            "resumed_from": str(resumed_from) if resumed_from else None}


def _log_record(run_dir: Path, writer, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key not in ("step", "samples", "epoch"):
                writer.add_scalar(key, value, record["samples"])
    log.info("sample %d: %s", record["samples"],
             ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))


def _validate(generator, validation, device, precision, run_dir, writer, step, samples) -> dict:
    scores = evaluate(generator, validation, device=device, precision=precision)
    _log_record(run_dir, writer, {"step": step, "samples": samples,
                                  **{f"validation_{k}": float(v) for k, v in scores.items()}})
    return scores


def export_generator(output, generator, model: str, model_options: dict, config: dict,
                     step: int, samples: int, validation: dict | None = None) -> Path:
    """Write the final generator file: weights plus model name, options, config and provenance."""
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    return ckpt.save(output, {"kind": "generator", "model": model, "model_options": model_options,
                              "generator": state, "config": config, "step": step,
                              "samples": samples, "validation": validation,
                              "provenance": describe()})


def _set_aside_stale_checkpoints(run_dir: Path, train_set, options: dict) -> None:
    """Keep checkpoints only while they belong to this job's training set and settings.

    Snakemake reruns a training job for two reasons: its last attempt was killed (resume from
    the newest checkpoint) or its inputs or settings changed (start over). A fingerprint of the
    training set file and the options that fix the weights tells the two apart; checkpoints of
    another fingerprint are moved aside, never deleted.
    """
    checkpoints = run_dir / "checkpoints"
    stat = os.stat(train_set)
    fingerprint = {
        "train_set": {"path": os.path.abspath(train_set), "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns},
        **{key: options.get(key, DEFAULTS.get(key)) for key in _RESUME_KEYS},
    }
    fingerprint_path = run_dir / "checkpoints.fingerprint.json"
    if checkpoints.exists() and any(checkpoints.iterdir()):
        previous = (json.loads(fingerprint_path.read_text())
                    if fingerprint_path.exists() else None)
        if previous != json.loads(json.dumps(fingerprint)):
            stale = run_dir / f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}"
            checkpoints.rename(stale)
            log.info("training set or settings changed since %s was written: moved to %s, "
                     "starting over", checkpoints, stale)
    write_json(fingerprint_path, fingerprint)


def train_run(train_set, run_dir, output, *, options: dict, validation_set=None,
              threads: int = 1) -> dict:
    """CLI entry (`lipsync train`): options = {"model", "model_options", any training_loop key}."""
    options = dict(options)
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise LipsyncError(f"unknown training option(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(DEFAULTS))}")
    options.setdefault("num_workers", max(0, threads))
    # Rank 0 alone; the other ranks wait for it in init_process_group's barrier.
    if distributed_environment()[0] == 0:
        _set_aside_stale_checkpoints(Path(run_dir), train_set, options)
    return training_loop(train_set=train_set, run_dir=run_dir, validation_set=validation_set,
                         output=output, **options)


__all__ = ["DEFAULTS", "TrainingInterrupted", "evaluate", "export_generator", "training_loop",
           "train_run"]
