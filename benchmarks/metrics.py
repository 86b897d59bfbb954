"""Metrics benchmark: every metric's scoring time for one GRIDTest-size system, from one run.

On real s1 crops (../shared/grid-s1, or $LIPSYNC_GRID_S1; synthetic faces without them), with a
"generated" set made from the ground truth (shifted a pixel, sensor noise), it times each metric's
scoring path in CPU seconds on one thread (what an idle core takes, even on a loaded machine),
projected to --cores idle cores each scoring its share of the frames (and on a GPU when present), checks it against its reference
implementation at the stated tolerance (scikit-image for SSIM/PSNR, dlib's own descriptors for
CSIM; LMD *is* dlib's shape predictor), and projects per frame (per clip for LSE) to GRIDTest's
44,589 frames in 660 clips: a system pays for its generated frames only, the real side is
reference data computed once per test set. Then the total for the paper's systems. FID/KID's
Inception is timed apart (GPU work). Prints one Markdown table.

    .venv/bin/python benchmarks/metrics.py                      # 10 real clips, 2 cores
    .venv/bin/python benchmarks/metrics.py --cores 1 --clips 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsync.metrics import fid, identity, kernels, landmarks, ssim_psnr, sync  # noqa: E402

GRID_TEST_SAMPLES = 44_589
GRID_TEST_CLIPS = 660  # 33 speakers x 20 clips
PAPER_SYSTEMS = 40  # runs, snapshots, the identity copy, real faces and 16 defect sets
SSIM_TOLERANCE = 1e-6
CSIM_TOLERANCE = 1e-5  # on descriptors of norm ~1.4 (float32 summation order)


_TOTALS = {"wall": 0.0, "cpu": 0.0}  # over the CPU measurements: their ratio shows the load


def timed(function, *args, sync_cuda: bool = False, **kwargs):
    """(seconds, result): CPU seconds of this process for CPU work, which is one thread's, so
    what it would take on an idle core (the machine is shared and loaded: its wall seconds are
    not); wall seconds for GPU work (`sync_cuda`)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    if sync_cuda:
        torch.cuda.synchronize()
        return time.perf_counter() - start, result
    cpu = time.process_time() - start_cpu
    _TOTALS["wall"] += time.perf_counter() - start
    _TOTALS["cpu"] += cpu
    return cpu, result


def real_clips(count: int) -> tuple[list[np.ndarray], str]:
    """96x96 crops of `count` real s1 clips (one OpenCV box per clip), or synthetic faces."""
    from lipsync.data import decode, detectors, faces

    folder = Path(os.environ.get("LIPSYNC_GRID_S1", REPO.parent / "shared" / "grid-s1")) / "s1"
    videos = sorted(folder.glob("*.mpg"))[:count]
    if not videos:
        sys.path.insert(0, str(REPO / "tests"))
        from helpers import smooth_faces

        return [smooth_faces(75, seed) for seed in range(count)], "synthetic faces (no grid-s1)"
    detector, clips = detectors.build(faces.FACES_DEFAULTS), []
    for video in videos:
        frames, _ = decode.read_video(video)
        boxes = [detectors.largest_box(rows) for rows in detector.detect(frames[[0, 37, -1]])]
        box = np.median(np.stack([b for b in boxes if b is not None]), axis=0)
        clips.append(faces.crop_faces(frames, np.repeat(box[None], len(frames), axis=0), 96))
    return clips, f"real s1 crops ({len(clips)} clips, {sum(map(len, clips))} frames)"


def generated_from(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plausible generated face: the ground truth one pixel to the right, with noise."""
    rng = np.random.default_rng(seed)
    moved = np.concatenate([truth[:, :, :1], truth[:, :, :-1]], axis=2).astype(np.float32)
    return np.clip(moved + rng.normal(0, 4, truth.shape), 0, 255).astype(np.uint8)


class Table:
    """Rows of the printed table; `minutes` per system at GRIDTest size on CPU (and GPU)."""

    def __init__(self, cores: int):
        self.rows: list[dict] = []
        self.cores = cores

    def add(self, metric: str, implementation: str, check: str, per_frame_s: float,
            per_system_s: float, gpu_per_system_s: float | None = None, *,
            scored: bool = False) -> None:
        """`per_system_s`: CPU seconds for one system, spread over the cores (frames and clips
        are independent: one process per core). `scored`: what scoring runs (not a reference)."""
        self.rows.append({"metric": metric, "implementation": implementation, "check": check,
                          "scored": scored,
                          "per_frame_ms": per_frame_s * 1e3,
                          "cpu_min": per_system_s / self.cores / 60,
                          "gpu_min": None if gpu_per_system_s is None else gpu_per_system_s / 60})

    def print(self) -> None:
        print(f"\n| metric | implementation | against its reference | CPU ms per frame (one "
              f"thread) | GRIDTest system on {self.cores} idle CPU cores (min) | on GPU (min) |")
        print("|---|---|---|---:|---:|---:|")
        for r in self.rows:
            gpu = "" if r["gpu_min"] is None else f"{r['gpu_min']:.2f}"
            print(f"| {r['metric']} | {r['implementation']} | {r['check']} | "
                  f"{r['per_frame_ms']:.2f} | {r['cpu_min']:.2f} | {gpu} |")


def ssim_psnr_rows(table: Table, generated, truth, devices) -> None:
    """Batched torch SSIM+PSNR (one thread, as it runs) against scikit-image's per-frame loop."""
    n = len(truth)
    base_s, base = timed(lambda: (ssim_psnr.ssim_skimage(generated, truth),
                                  ssim_psnr.psnr_skimage(generated, truth)))
    table.add("SSIM+PSNR", "scikit-image loop (reference)", "-", base_s / n,
              base_s / n * GRID_TEST_SAMPLES)
    gpu_s = None
    if "cuda" in devices:
        kernels.ssim_torch(generated[:64], truth[:64], device="cuda")  # warm-up
        gpu_s, _ = timed(lambda: (kernels.ssim_torch(generated, truth, device="cuda"),
                                  kernels.psnr_torch(generated, truth, device="cuda")),
                         sync_cuda=True)
    seconds, ours = timed(lambda: (kernels.ssim_torch(generated, truth),
                                   kernels.psnr_torch(generated, truth)))
    diff = max(float(np.abs(a - b)[np.isfinite(b)].max()) for a, b in zip(ours, base, strict=True))
    table.add("SSIM+PSNR", f"batched torch, 1 thread ({base_s / seconds:.1f}x scikit-image)",
              f"max abs diff {diff:.1e} ({'ok' if diff <= SSIM_TOLERANCE else 'FAILS'} <= "
              f"{SSIM_TOLERANCE:g})", seconds / n, seconds / n * GRID_TEST_SAMPLES,
              None if gpu_s is None else gpu_s / n * GRID_TEST_SAMPLES, scored=True)


def csim_rows(table: Table, generated, dlib_frames: int, devices) -> None:
    """CSIM embeddings: dlib's own calls (reference) on a few frames, the torch backend on all."""
    probe = generated[:dlib_frames]
    with identity.mapper({"backend": "dlib"}) as faces:
        faces(probe[:2])  # warm-up: models loaded
        dlib_s, expected = timed(faces, probe)
    table.add("CSIM", "dlib compute_face_descriptor (reference)", "-",
              dlib_s / len(probe), dlib_s / len(probe) * GRID_TEST_SAMPLES)
    gpu_s = None
    if "cuda" in devices:
        with identity.mapper({}, device="cuda") as faces:
            faces(generated[:64])
            gpu_s, _ = timed(faces, generated, sync_cuda=True)
            gpu_s /= len(generated)
    with identity.mapper({}) as faces:
        faces(generated[:64])
        seconds, got = timed(faces, generated)
    diff = float(np.abs(got[:len(probe)] - expected).max())
    per_frame = seconds / len(generated)
    table.add("CSIM", f"dlib's ResNet batched in torch ({dlib_s / len(probe) / per_frame:.1f}x "
              f"dlib), every frame", f"max abs diff {diff:.1e} ({'ok' if diff <= CSIM_TOLERANCE else 'FAILS'}"
              f" <= {CSIM_TOLERANCE:g})", per_frame, per_frame * GRID_TEST_SAMPLES,
              None if gpu_s is None else gpu_s * GRID_TEST_SAMPLES, scored=True)


def lmd_row(table: Table, generated) -> None:
    with landmarks.mapper({}) as points:
        points(generated[:8])  # warm-up
        seconds, _ = timed(points, generated)
    per_frame = seconds / len(generated)
    table.add("LMD", "dlib 68-point shape predictor",
              "is the reference", per_frame, per_frame * GRID_TEST_SAMPLES, scored=True)


def lse_row(table: Table, clips: list[np.ndarray], devices) -> None:
    """LSE's scoring path per clip (video windows through the expert, the offset curve), with a
    random-weight expert of the default size: the time does not depend on the weights."""
    from lipsync.models.syncnet import SyncExpert

    options = {**sync.LSE_DEFAULTS}
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal((len(c), 512)).astype(np.float32) for c in clips]
    times = {}
    for device in devices:
        expert = sync.for_scoring(SyncExpert().to(device))

        def score_all(expert=expert, device=device) -> None:
            for faces, unit_audio in zip(clips, audio, strict=True):
                sync.LSE._video_curve(expert, faces, np.arange(len(faces)), unit_audio, options,
                                      device)

        sync.LSE._video_curve(expert, clips[0][:8], np.arange(8), audio[0], options, device)
        times[device], _ = timed(score_all, sync_cuda=device == "cuda")
    # the cost is one expert pass per window of T consecutive frames: GRIDTest has N - T + 1
    # windows per clip
    frames = 5
    per_window = times["cpu"] / sum(len(c) - frames + 1 for c in clips)
    windows = GRID_TEST_SAMPLES - (frames - 1) * GRID_TEST_CLIPS
    table.add("LSE-D/C", f"own SyncNet expert (width 1: {expert_gmac():.2f} GMAC per window), "
              "per window", "is the reference", per_window, per_window * windows,
              times["cuda"] / sum(len(c) - frames + 1 for c in clips) * windows
              if "cuda" in times else None, scored=True)


def expert_gmac() -> float:
    """Multiply-accumulates of the default expert's face encoder per window, in billions."""
    from lipsync.models.syncnet import SyncExpert

    expert, total = SyncExpert().eval(), [0]

    def count(module, inputs, output):
        total[0] += (output.numel() * module.in_channels // module.groups
                     * module.kernel_size[0] * module.kernel_size[1])

    for module in expert.face.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(count)
    with torch.no_grad():
        expert.embed_faces(torch.rand(1, 15, 48, 96))
    return total[0] / 1e9


def fid_row(table: Table, images, devices, count: int) -> None:
    """Inception features of the generated frames (FID and KID share them)."""
    images = images[:count]
    per_image = {}
    for device in devices:
        model = fid.build_inception({"random_weights": True}, device)
        fid.features(images[:8], model, device, batch_size=8)  # warm-up
        seconds, _ = timed(fid.features, images, model, device, 50, sync_cuda=device == "cuda")
        per_image[device] = seconds / len(images)
    table.add("FID+KID", "Inception features (GPU work; not in the CPU target)", "-",
              per_image["cpu"], per_image["cpu"] * GRID_TEST_SAMPLES,
              per_image["cuda"] * GRID_TEST_SAMPLES if "cuda" in per_image else None)


def print_totals(table: Table) -> None:
    chosen = [r for r in table.rows if r["scored"]]
    cpu = sum(r["cpu_min"] for r in chosen)
    lse = sum(r["cpu_min"] for r in chosen if r["metric"].startswith("LSE"))
    inception = next(r for r in table.rows if r["metric"] == "FID+KID")
    print(f"\nEvery metric but FID/KID, one GRIDTest-size system, CSIM on every frame: "
          f"{cpu:.1f} min on {table.cores} idle CPU cores (target <= 10); the paper's {PAPER_SYSTEMS} "
          f"systems: {cpu * PAPER_SYSTEMS / 60:.1f} h (+ the real side once per test set, about "
          f"one system's CSIM and LMD); without LSE {cpu - lse:.1f} min")
    if all(r["gpu_min"] is not None for r in chosen[:2]):
        gpu = inception["gpu_min"] + sum(r["gpu_min"] or r["cpu_min"] for r in chosen)
        print(f"With a GPU (SSIM, CSIM, LSE and Inception on it, LMD on the CPU): {gpu:.1f} min "
              f"per system, {gpu * PAPER_SYSTEMS / 60:.1f} h for {PAPER_SYSTEMS}")
    else:
        print(f"FID/KID's Inception on this CPU: {inception['cpu_min']:.0f} min per system "
              "(GPU work)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2,
                        help="idle CPU cores the per-system times are projected to")
    parser.add_argument("--clips", type=int, default=10, help="real s1 clips to time on")
    parser.add_argument("--dlib-frames", type=int, default=24,
                        help="frames dlib's own CSIM (the slow reference) embeds")
    parser.add_argument("--fid-images", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: its CPU seconds are an idle core's
    clips, source = real_clips(args.clips)
    truth = np.concatenate(clips)
    generated = generated_from(truth)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{source}; generated = ground truth shifted 1 px + noise (sigma 4); GRIDTest = "
          f"{GRID_TEST_SAMPLES:,} frames in {GRID_TEST_CLIPS} clips; timed on one CPU thread "
          f"(CPU seconds); devices {', '.join(devices)}; load average {os.getloadavg()[0]:.2f}")
    table = Table(args.cores)
    ssim_psnr_rows(table, generated, truth, devices)
    csim_rows(table, generated, args.dlib_frames, devices)
    lmd_row(table, generated)
    lse_row(table, [generated_from(c, i) for i, c in enumerate(clips)], devices)
    fid_row(table, generated, devices, args.fid_images)
    table.print()
    print_totals(table)
    print(f"load average after: {os.getloadavg()[0]:.2f}; wall / CPU seconds of the CPU "
          f"measurements {_TOTALS['wall'] / max(_TOTALS['cpu'], 1e-9):.2f} (about 1 on an idle "
          "core: what the load cost in wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
