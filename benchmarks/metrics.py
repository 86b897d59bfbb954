"""Metrics benchmark: every metric's scoring time for one GRIDTest-size system, from one run.

On real s1 crops (../shared/grid-s1, or $LIPSYNC_GRID_S1; synthetic faces without them), with a
"generated" set made from the ground truth (shifted a pixel, sensor noise), it times each metric's
scoring path on --threads CPU cores (and on a GPU when present), checks it against its reference
implementation at the stated tolerance (scikit-image for SSIM/PSNR, dlib's own descriptors for
CSIM; LMD *is* dlib's shape predictor), and projects per frame (per clip for LSE) to GRIDTest's
44,589 frames in 660 clips: a system pays for its generated frames only, the real side is
reference data computed once per test set. Then the total for the paper's systems. FID/KID's
Inception is timed apart (GPU work). Prints one Markdown table.

    .venv/bin/python benchmarks/metrics.py                      # 2 cores, 10 real clips
    .venv/bin/python benchmarks/metrics.py --threads 1 --clips 4
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


def timed(function, *args, sync_cuda: bool = False, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    if sync_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


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

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, metric: str, implementation: str, check: str, per_frame_s: float,
            per_system_s: float, gpu_per_system_s: float | None = None) -> None:
        self.rows.append({"metric": metric, "implementation": implementation, "check": check,
                          "per_frame_ms": per_frame_s * 1e3, "cpu_min": per_system_s / 60,
                          "gpu_min": None if gpu_per_system_s is None else gpu_per_system_s / 60})

    def print(self, threads: int) -> None:
        print(f"\n| metric | implementation | against its reference | ms per frame | GRIDTest "
              f"system, {threads} CPU core{'s' if threads > 1 else ''} (min) | on GPU (min) |")
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
              None if gpu_s is None else gpu_s / n * GRID_TEST_SAMPLES)


def csim_rows(table: Table, generated, threads: int, dlib_frames: int, devices) -> None:
    """CSIM embeddings: dlib's own calls (reference) on a few frames, the torch backend on all."""
    probe = generated[:dlib_frames]
    with identity.mapper({"backend": "dlib"}, threads) as faces:
        faces(probe[:threads * 8])  # warm-up: models loaded, workers started
        dlib_s, expected = timed(faces, probe)
    table.add("CSIM", f"dlib compute_face_descriptor, {threads} process(es) (reference)", "-",
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
              None if gpu_s is None else gpu_s * GRID_TEST_SAMPLES)


def lmd_row(table: Table, generated, threads: int) -> None:
    with landmarks.mapper({}, workers=threads, min_frames_per_worker=64) as points:
        points(generated[:threads * 64])  # warm-up
        seconds, _ = timed(points, generated)
    per_frame = seconds / len(generated)
    table.add("LMD", f"dlib 68-point shape predictor, {threads} process(es)",
              "is the reference", per_frame, per_frame * GRID_TEST_SAMPLES)


def lse_row(table: Table, clips: list[np.ndarray], devices) -> None:
    """LSE's scoring path per clip (video windows through the expert, the offset curve), with a
    random-weight expert of the default size: the time does not depend on the weights."""
    from lipsync.models.syncnet import SyncExpert

    options = {**sync.LSE_DEFAULTS}
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal((len(c), 512)).astype(np.float32) for c in clips]
    times = {}
    for device in devices:
        expert = SyncExpert().eval().to(device)

        def score_all(expert=expert, device=device) -> None:
            for faces, unit_audio in zip(clips, audio, strict=True):
                sync.LSE._video_curve(expert, faces, np.arange(len(faces)), unit_audio, options,
                                      device)

        sync.LSE._video_curve(expert, clips[0][:8], np.arange(8), audio[0], options, device)
        times[device], _ = timed(score_all, sync_cuda=device == "cuda")
    per_clip = times["cpu"] / len(clips)
    frames = sum(map(len, clips)) / len(clips)
    table.add("LSE-D/C", "own SyncNet expert (width 1), torch", "is the reference",
              per_clip / frames, per_clip * GRID_TEST_CLIPS,
              times["cuda"] / len(clips) * GRID_TEST_CLIPS if "cuda" in times else None)


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


def print_totals(table: Table, threads: int) -> None:
    fast = {"SSIM+PSNR": "batched", "CSIM": "torch", "LMD": "dlib", "LSE-D/C": "torch"}
    chosen = [r for r in table.rows if r["metric"] in fast
              and fast[r["metric"]] in r["implementation"]]
    cpu = sum(r["cpu_min"] for r in chosen)
    inception = next(r for r in table.rows if r["metric"] == "FID+KID")
    print(f"\nEvery metric but FID/KID, one GRIDTest-size system, CSIM on every frame: "
          f"{cpu:.1f} min on {threads} CPU core(s) (target <= 10); the paper's {PAPER_SYSTEMS} "
          f"systems: {cpu * PAPER_SYSTEMS / 60:.1f} h (+ the real side once per test set, about "
          "one system's CSIM and LMD)")
    if all(r["gpu_min"] is not None for r in chosen[:2]):
        gpu = inception["gpu_min"] + sum(r["gpu_min"] or r["cpu_min"] for r in chosen)
        print(f"With a GPU (SSIM, CSIM, LSE and Inception on it, LMD on the CPU): {gpu:.1f} min "
              f"per system, {gpu * PAPER_SYSTEMS / 60:.1f} h for {PAPER_SYSTEMS}")
    else:
        print(f"FID/KID's Inception on this CPU: {inception['cpu_min']:.0f} min per system "
              "(GPU work)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU cores (torch threads and "
                        "dlib worker processes)")
    parser.add_argument("--clips", type=int, default=10, help="real s1 clips to time on")
    parser.add_argument("--dlib-frames", type=int, default=24,
                        help="frames dlib's own CSIM (the slow reference) embeds")
    parser.add_argument("--fid-images", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clips, source = real_clips(args.clips)
    truth = np.concatenate(clips)
    generated = generated_from(truth)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{source}; generated = ground truth shifted 1 px + noise (sigma 4); GRIDTest = "
          f"{GRID_TEST_SAMPLES:,} frames in {GRID_TEST_CLIPS} clips; {args.threads} CPU "
          f"thread(s); devices {', '.join(devices)}; load {os.getloadavg()[0]:.2f}")
    table = Table()
    ssim_psnr_rows(table, generated, truth, devices)
    csim_rows(table, generated, args.threads, args.dlib_frames, devices)
    lmd_row(table, generated, args.threads)
    lse_row(table, [generated_from(c, i) for i, c in enumerate(clips)], devices)
    fid_row(table, generated, devices, args.fid_images)
    table.print(args.threads)
    print_totals(table, args.threads)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
