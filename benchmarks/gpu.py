"""One command that proves every GPU path and measures it, on whatever devices it finds.

Rows: the data loader; training of each model in float32, bf16 and fp16 (GradScaler) with
samples/s, peak GPU memory and the loader's samples/s beside them; lipsync's training_loop end
to end; the same with 2 processes (torchrun, NCCL, SyncBatchNorm) when 2 GPUs are visible (gloo
on a machine without CUDA); test-set generation; FID Inception features; batched SSIM/PSNR
against scikit-image's loop; S3FD face detection. Exits 1 when any row fails; prints one table
and writes it as gpu.json and gpu.md under --output. How to run it on a lent GPU: docs/gpu.md.

    python benchmarks/gpu.py --output results/gpu                  # GPU: about 5 minutes
    python benchmarks/gpu.py --smoke --output /tmp/gpu             # CPU smoke test (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsync.core.errors import InputError, LipsyncError  # noqa: E402
from lipsync.core.io import atomic_path, write_json  # noqa: E402
from lipsync.core.progress import progress  # noqa: E402

# What one run does; --smoke swaps in SMOKE, any flag given overrides either.
FULL = {
    "steps": 300,            # "a few hundred" per model and precision (issue 13)
    "batch_size": 96,        # LipGAN's batch (per GPU)
    "width": 1.0,            # the paper's networks
    "workers": 4,            # DataLoader processes of the loader row and training_loop
    "loader_batches": 40,
    "fid_images": 2048,
    "ssim_pairs": 8192,
    "skimage_pairs": 512,    # scikit-image's loop is slow: time a share, compare on it
    "detect_frames": 128,
}
SMOKE = {"steps": 3, "batch_size": 8, "width": 0.125, "workers": 0, "loader_batches": 3,
         "fid_images": 4, "ssim_pairs": 16, "skimage_pairs": 16, "detect_frames": 1}
MODELS = ("lipgan", "l1wgan_gp", "wgan_gp")
# The loss that must fall while a model fits a few batches: the L1 term where the generator is
# trained on it; plain WGAN-GP has none, and its critic loss falls as the critic learns.
MONITORED = {"lipgan": "g_l1", "l1wgan_gp": "g_l1", "wgan_gp": "c_loss"}
# Fewer values than this show noise, not learning: then losses are only checked to be finite.
MIN_VALUES_FOR_DECREASE = 30
# Distinct batches the training rows cycle through (kept on the device: compute only).
TRAIN_BATCHES = 8
# Precision modes of lipsync's Precision helper, by table name.
PRECISIONS = {"float32": False, "bf16": "bf16", "fp16": "fp16"}
SSIM_TOLERANCE = 1e-5
SSIM_TARGET_RATIO = 20  # the evaluation issue's target for the batched GPU path
NO_CUDA = "skipped: no CUDA device"


class CheckFailed(Exception):
    """A check ran but its result is wrong (the row says why)."""


@dataclass
class Row:
    check: str
    device: str
    precision: str = ""
    status: str = "ok"
    rate: float | None = None
    unit: str = ""
    loader_rate: float | None = None
    peak_memory_gib: float | None = None
    note: str = ""
    seconds: float | None = None  # wall time of the whole row, set-up included


def make_precision(device: torch.device, mode: bool | str):
    """The project's Precision helper (autocast, GradScaler, gradient averaging); imported here
    alone, so a move of the helper costs one line."""
    from lipsync.training.precision import Precision

    return Precision(device, mode)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def guarded(rows: list[Row], row: Row, check) -> Row:
    """Run `check(row)` (it fills the row in); a failure becomes the row's status, and the
    other checks still run."""
    start = time.perf_counter()
    try:
        check(row)
    except Exception as error:  # every failure is reported in the table, none stops the run
        row.status = f"FAIL: {type(error).__name__}: {error}".replace("\n", " ")[:400]
        if not isinstance(error, CheckFailed):
            traceback.print_exc()
    row.seconds = time.perf_counter() - start
    rows.append(row)
    print(format_row(row), flush=True)
    return row


# --- data -------------------------------------------------------------------------------------


def prepare_data(folder: Path, work: Path, batch_size: int) -> tuple[Path, Path, str]:
    """The packed subset in `folder` when it is there, else synthetic crops in `work`."""
    from lipsync.data.subset import subset_files, synthetic_subset

    files = subset_files(folder)
    present = [name for name in ("train.h5", "test.h5") if (folder / name).is_file()]
    if files is None and present:
        raise InputError(folder, f"has {present[0]} but not the other split: repack it with "
                                 "`lipsync pack-subset`")
    if files is not None:
        summary = json.loads((folder / "subset.json").read_text()) \
            if (folder / "subset.json").is_file() else {}
        return (*files, f"{folder} ({summary.get('source', 'packed subset')}, "
                        f"{summary.get('layout', '?')} layout)")
    # enough synthetic clips (68 samples each) for TRAIN_BATCHES batches
    clips = max(2, -(-TRAIN_BATCHES * batch_size // 68))
    target = work / "synthetic-data"
    synthetic_subset(target, train_clips=clips, test_clips=1)
    return target / "train.h5", target / "test.h5", f"synthetic crops ({folder} not found)"


def _loader(dataset, batch_size: int, workers: int, device: torch.device, shuffle: bool = True):
    from torch.utils.data import DataLoader

    from lipsync.data.dataset import collate

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


def check_loader(row: Row, train: Path, device: torch.device, s: dict) -> None:
    """samples/s of the training data path: workers read uint8 items, the batch goes to the
    device and is scaled and masked there (what training_loop does per step)."""
    from lipsync.data.dataset import LipSyncDataset, model_inputs

    dataset = LipSyncDataset(train, uint8=True)
    loader = _loader(dataset, s["batch_size"], s["workers"], device)
    if len(loader) == 0:
        raise CheckFailed(f"{train}: {len(dataset)} samples, fewer than a batch")
    seen, start = 0, None
    while seen < s["loader_batches"] * s["batch_size"]:
        for batch in loader:
            model_inputs(batch, device)
            if start is None:  # the first batch pays for starting the workers
                synchronize(device)
                start = time.perf_counter()
                continue
            seen += s["batch_size"]
            if seen >= s["loader_batches"] * s["batch_size"]:
                break
    synchronize(device)
    row.rate, row.unit = seen / (time.perf_counter() - start), "samples/s"
    row.note = f"{len(dataset)} samples, {s['workers']} workers, batch {s['batch_size']}"


# --- training ---------------------------------------------------------------------------------


def device_batches(train: Path, device: torch.device, s: dict) -> list[dict]:
    from lipsync.data.dataset import LipSyncDataset, model_inputs

    dataset = LipSyncDataset(train, uint8=True)
    if len(dataset) < s["batch_size"]:
        raise CheckFailed(f"{train}: {len(dataset)} samples, fewer than a batch")
    batches = []
    for batch in _loader(dataset, s["batch_size"], 0, device):
        batches.append(model_inputs(batch, device))
        if len(batches) == TRAIN_BATCHES:
            break
    return batches


def loss_note(series: dict[str, list[float]], monitored: str) -> str:
    """Raise CheckFailed unless every loss is finite and, given enough values, `monitored`
    falls (mean of the last tenth below the mean of the first); else say what was seen."""
    bad = sorted(k for k, v in series.items() if not np.all(np.isfinite(v)))
    if bad:
        raise CheckFailed(f"non-finite loss(es) {', '.join(bad)}")
    if monitored not in series:
        raise CheckFailed(f"no {monitored} loss reported (got {', '.join(sorted(series))})")
    values = np.asarray(series[monitored], dtype=np.float64)
    if len(values) < MIN_VALUES_FOR_DECREASE:
        return (f"losses finite; {monitored} {values[0]:.4g}->{values[-1]:.4g}, only "
                f"{len(values)} value{'s' * (len(values) != 1)}: decrease not asserted")
    k = max(1, len(values) // 10)
    first, last = values[:k].mean(), values[-k:].mean()
    if not last < first:
        raise CheckFailed(f"{monitored} did not go down: mean of the first {k} values "
                          f"{first:.4g}, of the last {k} {last:.4g}")
    return f"losses finite; {monitored} {first:.4g}->{last:.4g} (first/last {k} of {len(values)})"


def check_training(row: Row, model: str, mode: bool | str, batches: list[dict],
                   device: torch.device, s: dict, loader_rate: float | None) -> None:
    """`steps` training steps of `model` on batches already on the device: compute alone."""
    from lipsync.models import registry

    precision = make_precision(device, mode)
    if precision.name != row.precision:
        raise CheckFailed(f"Precision({mode!r}) gave {precision.name}, not {row.precision}")
    reset_memory(device)
    torch.manual_seed(0)
    pair = registry.build(model, {"width": s["width"]})
    generator, discriminator = pair.generator.to(device), pair.discriminator.to(device)
    networks = {"generator": generator, "discriminator": discriminator}
    optimizers = pair.scheme.optimizers(networks)
    with torch.no_grad(), precision.autocast():  # autocast really casts: the output's dtype
        dtype = generator(batches[0]["generator_input"], batches[0]["mel"]).dtype
    expected = precision.dtype or torch.float32
    if dtype != expected:
        raise CheckFailed(f"generator output is {dtype} under autocast, expected {expected}")
    # WGAN-GP updates the generator on every n_critic-th step: whole cycles only
    cycle = int(pair.options.get("n_critic", 1))
    steps = -(-s["steps"] // cycle) * cycle
    # cuDNN autotuning and the allocator settle before the clock starts (not worth it in a
    # smoke run shorter than a cycle)
    warmup = cycle if s["steps"] >= cycle else 0
    losses: list[dict] = []

    def run(first: int, count: int) -> None:
        for step in range(first, first + count):
            losses.append(pair.scheme.train_step(
                batches[step % len(batches)], step, seed=0, networks=networks,
                optimizers=optimizers, precision=precision))

    run(0, warmup)
    synchronize(device)
    start = time.perf_counter()
    run(warmup, steps)
    synchronize(device)
    seconds = time.perf_counter() - start
    series: dict[str, list[float]] = {}
    for record in losses:  # one transfer at the end: no per-step synchronisation
        for key, value in record.items():
            series.setdefault(key, []).append(value)
    series = {k: torch.stack(v).float().cpu().tolist() for k, v in series.items()}
    row.rate, row.unit = steps * s["batch_size"] / seconds, "samples/s"
    row.loader_rate = loader_rate
    row.peak_memory_gib = peak_memory(device)
    notes = [loss_note(series, MONITORED.get(model, "g_loss")), f"{warmup + steps} steps"]
    if loader_rate:
        notes.append(f"loader/training {loader_rate / row.rate:.2f}"
                     + (" (loader-bound)" if loader_rate < row.rate else ""))
    if precision.dtype == torch.float16:
        scales = {k: float(v.get_scale()) for k, v in precision.scalers.items()}
        if not all(v.is_enabled() for v in precision.scalers.values()):
            raise CheckFailed("fp16 without an enabled GradScaler")
        notes.append("GradScaler scales " + ", ".join(f"{k} {v:g}" for k, v in scales.items()))
    row.note = "; ".join(notes)


def _training_options(s: dict, steps: int, batch_size: int, workers: int, device: str) -> dict:
    return {"batch_size": batch_size, "total_samples": steps * batch_size,
            "log_every_samples": batch_size, "checkpoint_every_samples": steps * batch_size,
            "num_workers": workers, "mixed_precision": True, "device": device,
            "progress_bar": False}


def _log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _loop_summary(row: Row, run_dir: Path, model: str) -> None:
    """Rate and loss checks from training_loop's log (one record per step)."""
    records = [r for r in _log_rows(run_dir) if "samples_per_second" in r]
    if not records:
        raise CheckFailed(f"{run_dir / 'log.jsonl'} has no training records")
    skip = len(records) // 10  # the first steps start workers and tune kernels
    row.rate = float(np.median([r["samples_per_second"] for r in records[skip:]]))
    row.unit = "samples/s"
    series: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            if key not in ("step", "samples", "epoch", "samples_per_second"):
                series.setdefault(key, []).append(value)
    row.note = (loss_note(series, MONITORED.get(model, "g_loss"))
                + f"; median of per-step rates, loader included; {len(records)} steps")


def check_training_loop(row: Row, model: str, train: Path, work: Path, device: torch.device,
                        s: dict) -> Path:
    """lipsync.training.loop.training_loop end to end (real loader, mixed precision auto, checkpoint,
    exported generator); returns the generator file for the generation row."""
    from lipsync.training.loop import training_loop

    run_dir = work / "training_loop" / model
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover checkpoint would resume
    reset_memory(device)
    training_loop(train_set=str(train), run_dir=run_dir, model=model,
                  model_options={"width": s["width"]},
                  **_training_options(s, s["steps"], s["batch_size"], s["workers"],
                                      device.type))
    row.precision = make_precision(device, True).name
    row.peak_memory_gib = peak_memory(device)
    _loop_summary(row, run_dir, model)
    if not (run_dir / "generator.pt").is_file():
        raise CheckFailed(f"training_loop wrote no {run_dir / 'generator.pt'}")
    return run_dir / "generator.pt"


def check_two_processes(row: Row, model: str, train: Path, work: Path, s: dict,
                        cuda: bool) -> None:
    """2 processes through torchrun: NCCL and SyncBatchNorm on 2 GPUs, gloo on CPU."""
    run_dir = work / "two_processes" / model
    shutil.rmtree(run_dir, ignore_errors=True)
    job = {"model": model, "train": str(train), "run_dir": str(run_dir), "width": s["width"],
           # LipGAN's 96 per GPU: the global batch is twice the per-process one
           "options": _training_options(s, s["steps"], 2 * s["batch_size"], s["workers"],
                                        "cuda" if cuda else "cpu")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(Path(__file__).resolve()),
               "--distributed-worker", json.dumps(job)]
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, env=environment,
                          timeout=600)
    if done.returncode != 0:
        raise CheckFailed(f"torchrun exited {done.returncode}: {done.stderr[-600:]}")
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(2)]
    backend = ranks[0]["backend"]
    if cuda and backend != "nccl":
        raise CheckFailed(f"process group backend {backend}, expected nccl")
    sync_calls = min(r["sync_batchnorm_calls"] for r in ranks)
    if cuda and sync_calls == 0:
        raise CheckFailed("no SyncBatchNorm forward ran on a rank")
    _loop_summary(row, run_dir, model)
    memory = [r["peak_memory_gib"] for r in ranks if r["peak_memory_gib"] is not None]
    row.peak_memory_gib = max(memory) if memory else None
    row.precision = ranks[0]["precision"]
    row.note += (f"; backend {backend}, SyncBatchNorm forwards per rank {sync_calls}, "
                 f"global batch {2 * s['batch_size']}")


def distributed_worker(job: dict) -> None:
    """One torchrun rank: join the group here (to record its backend), then training_loop."""
    import torch.distributed as dist

    from lipsync.training.loop import training_loop

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    cuda = job["options"]["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    calls = {"n": 0}
    forward = torch.nn.SyncBatchNorm.forward

    def counted(self, *args, **kwargs):  # proves the loop converted BatchNorm to SyncBatchNorm
        calls["n"] += 1
        return forward(self, *args, **kwargs)

    torch.nn.SyncBatchNorm.forward = counted
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    reset_memory(device)
    try:
        training_loop(train_set=job["train"], run_dir=job["run_dir"], model=job["model"],
                      model_options={"width": job["width"]}, **job["options"])
        record = {"rank": rank, "backend": dist.get_backend(), "sync_batchnorm_calls": calls["n"],
                  "peak_memory_gib": peak_memory(device),
                  "precision": make_precision(device, True).name}
        write_json(Path(job["run_dir"]) / f"rank{rank}.json", record)
    finally:
        dist.destroy_process_group()


# --- generation and metrics -------------------------------------------------------------------


def check_generation(row: Row, generator: Path | None, test: Path, work: Path,
                     device: torch.device, s: dict) -> None:
    import h5py

    from lipsync.tools.generate import generate

    if generator is None:
        raise CheckFailed("no generator: the training_loop row failed")
    output = work / "generated.h5"
    options = {"device": str(device), "batch_size": 256 if device.type == "cuda" else 16}
    generate(str(generator), str(test), str(output), options=options, threads=1)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    attrs = generate(str(generator), str(test), str(output), options=options, threads=1)
    seconds = time.perf_counter() - start
    with h5py.File(output, "r") as handle:
        shape = handle["faces"].shape
    if shape[0] != attrs["samples"] or shape[1:] != (96, 96, 3):
        raise CheckFailed(f"{output}: faces {shape} for {attrs['samples']} test samples")
    row.rate, row.unit = shape[0] / seconds, "faces/s"
    row.note = f"{shape[0]} test samples, second of two runs, HDF5 writing included"


def test_faces(test: Path, count: int) -> np.ndarray:
    """`count` real (or synthetic) test crops, repeated as often as needed."""
    import h5py

    from lipsync.data.dataset import LipSyncDataset

    with h5py.File(test, "r") as handle:
        crops = handle["crops/clip_index"].shape[0]
    faces = LipSyncDataset(test).read_faces(np.arange(min(crops, count)))
    return np.resize(faces, (count, *faces.shape[1:]))


def check_fid(row: Row, test: Path, device: torch.device, s: dict) -> None:
    from lipsync.metrics import fid

    images = test_faces(test, s["fid_images"])
    model = fid.build_inception({"random_weights": True}, device)
    batch = 200 if device.type == "cuda" else 8
    fid.features(images[:batch], model, device, batch_size=batch)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    rows = fid.features(images, model, device, batch_size=batch)
    seconds = time.perf_counter() - start
    if rows.shape != (len(images), 2048) or not np.isfinite(rows).all():
        raise CheckFailed(f"features of shape {rows.shape}, finite {np.isfinite(rows).all()}")
    row.rate, row.unit = len(images) / seconds, "images/s"
    row.note = f"{len(images)} images, batch {batch}, random weights, 2048-d"


def check_ssim_psnr(row: Row, test: Path, device: torch.device, s: dict) -> None:
    from lipsync.metrics import ssim_psnr

    truth = test_faces(test, s["ssim_pairs"])
    noise = np.random.default_rng(0).normal(0, 12, truth.shape)
    generated = np.clip(truth + noise, 0, 255).astype(np.uint8)
    share = min(s["skimage_pairs"], len(truth))
    start = time.perf_counter()
    reference = (ssim_psnr.ssim_skimage(generated[:share], truth[:share]),
                 ssim_psnr.psnr_skimage(generated[:share], truth[:share]))
    skimage_per_pair = (time.perf_counter() - start) / share
    ssim_psnr.ssim_torch(generated[:64], truth[:64], device=device)  # warm-up
    start = time.perf_counter()  # results come back as numpy: the device is synchronised
    ours = (ssim_psnr.ssim_torch(generated, truth, device=device),
            ssim_psnr.psnr_torch(generated, truth, device=device))
    torch_per_pair = (time.perf_counter() - start) / len(truth)
    difference = max(float(np.abs(a[:share] - b)[np.isfinite(b)].max())
                     for a, b in zip(ours, reference, strict=True))
    row.rate, row.unit = 1 / torch_per_pair, "pairs/s"
    ratio = skimage_per_pair / torch_per_pair
    row.note = (f"{len(truth)} pairs; scikit-image loop {1 / skimage_per_pair:.0f} pairs/s on "
                f"{share}; ratio {ratio:.1f}x (target {SSIM_TARGET_RATIO}x on GPU); "
                f"max |diff| {difference:.1e}")
    if not difference <= SSIM_TOLERANCE:
        raise CheckFailed(f"SSIM/PSNR differ from scikit-image by {difference:.2e} "
                          f"> {SSIM_TOLERANCE:g}")


def random_s3fd_weights(path: Path) -> Path:
    """A seeded random-weight S3FD state dict. Its face scores are biased far down: random
    scores pass the detector's 0.05 threshold almost everywhere and its Python post-processing
    would then time tens of thousands of boxes per frame; a trained network proposes few."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = s3fd()
    with torch.no_grad():
        for name, module in network.named_children():
            if name.endswith("mbox_conf"):
                module.bias[1:].fill_(-20.0)  # every channel after background 0
    with atomic_path(path) as tmp:
        torch.save(network.state_dict(), tmp)
    return path


def check_detection(row: Row, test: Path, work: Path, device: torch.device, s: dict) -> None:
    import cv2

    from lipsync.data.detectors import S3FDDetector

    detector = S3FDDetector(str(random_s3fd_weights(work / "s3fd-random.pth")),
                            device=str(device))
    # GRID-sized frames (360 x 288) with a face where a speaker's would be
    faces = test_faces(test, s["detect_frames"])
    frames = np.full((len(faces), 288, 360, 3), 110, np.uint8)
    for k, face in enumerate(faces):
        frames[k, 60:220, 100:260] = cv2.resize(face, (160, 160))
    detector.detect(frames[:detector.batch_size])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    found = detector.detect(frames)
    seconds = time.perf_counter() - start
    if len(found) != len(frames):
        raise CheckFailed(f"{len(found)} results for {len(frames)} frames")
    row.rate, row.unit = len(frames) / seconds, "frames/s"
    row.note = (f"{len(frames)} frames 360x288, batch {detector.batch_size}; random weights: "
                "speed only")


# --- table ------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


COLUMNS = ("check", "device", "precision", "status", "rate", "loader samples/s",
           "peak GPU GiB", "s", "note")


def _cells(row: Row) -> list[str]:
    rate = f"{_number(row.rate)} {row.unit}" if row.rate is not None else ""
    return [row.check, row.device, row.precision, row.status, rate, _number(row.loader_rate),
            _number(row.peak_memory_gib, 2), _number(row.seconds), row.note]


def format_row(row: Row) -> str:
    return " | ".join(_cells(row))


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        names = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
        return f"{len(names)} x {names[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU only ({os.cpu_count()} cores), torch {torch.__version__}"


# --- main -------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="results/gpu", help="folder for gpu.json, gpu.md")
    parser.add_argument("--data", default="data/gpu-subset",
                        help="folder with train.h5 and test.h5 (lipsync pack-subset); "
                             "synthetic crops when absent")
    parser.add_argument("--work", default=None,
                        help="scratch folder (checkpoints, generated faces); default OUTPUT/work")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the CPU test in CI")
    parser.add_argument("--models", default=",".join(MODELS))
    for key, value in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value} ({SMOKE[key]} with --smoke)")
    parser.add_argument("--distributed-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = {**(SMOKE if args.smoke else FULL),
                **{k: getattr(args, k) for k in FULL if getattr(args, k) is not None}}
    return args, settings


def main(argv: list[str] | None = None) -> int:
    args, s = parse_arguments(argv)
    if args.distributed_worker:
        distributed_worker(json.loads(args.distributed_worker))
        return 0
    began = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    output = Path(args.output)
    work = Path(args.work) if args.work else output / "work"
    work.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    train, test, data = prepare_data(Path(args.data), work, s["batch_size"])
    header = (f"benchmarks/gpu.py on {describe_machine(device)}; data: {data}; steps "
              f"{s['steps']}, batch {s['batch_size']}, width {s['width']}")
    print(header, flush=True)
    if not cuda and not args.smoke:
        print("no CUDA device: full sizes on the CPU take hours; --smoke is the CPU run",
              file=sys.stderr, flush=True)
    rows: list[Row] = []
    dev = device.type

    loader = guarded(rows, Row("loader", dev), lambda r: check_loader(r, train, device, s))
    batches: list[dict] = []
    guarded(rows, Row("device batches", dev),
            lambda r: batches.extend(device_batches(train, device, s)))
    plan = [(m, p) for m in models for p in PRECISIONS]
    for model, name in progress(plan, desc="training rows", unit="row"):
        row = Row(f"train {model}", dev, name)
        if name != "float32" and not cuda:
            row.status = NO_CUDA
            rows.append(row)
            print(format_row(row), flush=True)
            continue
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            row.status = "skipped: this GPU has no bf16"
            rows.append(row)
            print(format_row(row), flush=True)
            continue
        guarded(rows, row, lambda r, m=model, n=name: check_training(
            r, m, PRECISIONS[n], batches, device, s, loader.rate))
    batches.clear()

    generator: list[Path] = []
    guarded(rows, Row(f"training_loop {models[0]}", dev),
            lambda r: generator.append(check_training_loop(r, models[0], train, work, device,
                                                           s)))
    gpus = torch.cuda.device_count() if cuda else 0
    for model in models if gpus >= 2 else models[:1]:
        row = Row(f"training_loop {model} x2 processes", dev)
        if cuda and gpus < 2:
            row.status = f"skipped: {gpus} CUDA device visible, needs 2"
            rows.append(row)
            print(format_row(row), flush=True)
            continue
        guarded(rows, row, lambda r, m=model: check_two_processes(r, m, train, work, s, cuda))
    guarded(rows, Row("generate test set", dev),
            lambda r: check_generation(r, generator[0] if generator else None, test, work,
                                       device, s))
    guarded(rows, Row("FID Inception features", dev), lambda r: check_fid(r, test, device, s))
    guarded(rows, Row("SSIM+PSNR batched vs scikit-image", dev),
            lambda r: check_ssim_psnr(r, test, device, s))
    guarded(rows, Row("S3FD face detection", dev),
            lambda r: check_detection(r, test, work, device, s))

    failed = [r for r in rows if r.status.startswith("FAIL")]
    header += f"; {time.perf_counter() - began:.0f} s"
    table = markdown(rows, header)
    print("\n" + table, flush=True)
    with atomic_path(output / "gpu.md") as tmp:
        Path(tmp).write_text(table)
    write_json(output / "gpu.json", {"header": header, "settings": s, "data": data,
                                     "rows": [asdict(r) for r in rows],
                                     "failed": len(failed)})
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(r.check for r in failed)}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LipsyncError as error:  # bad input before any check ran: say which, no traceback
        print(f"benchmarks/gpu.py: error: {error}", file=sys.stderr)
        sys.exit(1)
