"""Metrics benchmark: batched torch SSIM+PSNR against scikit-image's per-frame loop; FID throughput.

Prints, from one run: seconds for SSIM+PSNR over the same frame pairs with the batched torch
backend (CPU, and GPU when present) and with scikit-image's loop, their ratio, the largest absolute
difference (must be <= 1e-5), and the times scaled to GRIDTest's 44,589 pairs when a fraction was
timed; then FID feature-extraction throughput (images/s) of the seeded random-weight Inception
(2048-d) on CPU and on GPU when present; then LMD landmarks and CSIM embeddings per second on
real s1 crops (../shared/grid-s1, or $LIPSYNC_GRID_S1; synthetic faces without them) in one
process and in --threads worker processes, with the projected time of scoring a GRIDTest-sized
set (real landmarks and embeddings are computed once per test set, so a run pays for its
generated frames only).

    .venv/bin/python benchmarks/metrics.py                    # 1/8 of GRIDTest, 1 thread
    .venv/bin/python benchmarks/metrics.py --fraction 1 --threads 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsync.metrics import fid, identity, landmarks, ssim_psnr  # noqa: E402

GRID_TEST_SAMPLES = 44_589
GRID_TEST_CLIPS = 660  # 33 speakers x 20 clips
TOLERANCE = 1e-5


def frame_pairs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Face-sized pairs with smooth structure: ground truth and a perturbed 'generated' frame."""
    rng = np.random.default_rng(seed)
    truth = np.empty((count, 96, 96, 3), dtype=np.uint8)
    generated = np.empty_like(truth)
    for start in range(0, count, 1024):  # in blocks: float temporaries stay small
        stop = min(start + 1024, count)
        coarse = rng.integers(30, 225, (stop - start, 12, 12, 3)).astype(np.float32)
        images = coarse.repeat(8, axis=1).repeat(8, axis=2)
        images += rng.normal(0, 10, images.shape).astype(np.float32)
        truth[start:stop] = np.clip(images, 0, 255)
        noise = rng.normal(0, 12, images.shape).astype(np.float32)
        generated[start:stop] = np.clip(images + noise, 0, 255)
    return generated, truth


def timed(function, *args, sync: bool = False, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def torch_scores(generated, truth, device: str, batch_size: int):
    ssim, psnr = [], []
    for start in range(0, len(truth), batch_size):
        s, p = ssim_psnr.score_pairs(generated[start:start + batch_size],
                                     truth[start:start + batch_size],
                                     options={"backend": "torch"}, device=device)
        ssim.append(s)
        psnr.append(p)
    return np.concatenate(ssim), np.concatenate(psnr)


def max_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    return max(float(np.abs(x - y)[np.isfinite(y)].max()) for x, y in zip(a, b, strict=True))


def real_crops(count: int) -> tuple[np.ndarray, str]:
    """`count` 96x96 crops of real s1 clips (one OpenCV box per clip), or synthetic faces."""
    import os

    from lipsync.data import decode, detectors, faces

    folder = Path(os.environ.get("LIPSYNC_GRID_S1", REPO.parent / "shared" / "grid-s1")) / "s1"
    videos = sorted(folder.glob("*.mpg"))
    if not videos:
        return frame_pairs(count, 0)[1], "synthetic faces (no ../shared/grid-s1)"
    detector, crops = detectors.build(faces.FACES_DEFAULTS), []
    for video in videos:
        frames, _ = decode.read_video(video)
        boxes = [detectors.largest_box(rows) for rows in detector.detect(frames[[0, 37, -1]])]
        box = np.median(np.stack([b for b in boxes if b is not None]), axis=0)
        crops.append(faces.crop_faces(frames, np.repeat(box[None], len(frames), axis=0), 96))
        if sum(map(len, crops)) >= count:
            break
    return np.concatenate(crops)[:count], f"real s1 crops ({len(crops)} clips)"


def dlib_throughput(lmd_frames: int, csim_frames: int, threads: int) -> None:
    """LMD and CSIM frames/s and the projected scoring time of a GRIDTest-sized set."""
    images, source = real_crops(max(lmd_frames, csim_frames))
    per_clip = identity.DEFAULTS["frames_per_clip"]
    cases = [("LMD (dlib 68-point landmarks)", lambda w: landmarks.mapper({}, workers=w),
              images[:lmd_frames], [("every frame", GRID_TEST_SAMPLES)]),
             ("CSIM (dlib face-recognition ResNet)", lambda w: identity.mapper({}, w),
              images[:csim_frames], [(f"frames_per_clip {per_clip}", per_clip * GRID_TEST_CLIPS),
                                     ("frames_per_clip 0 (all)", GRID_TEST_SAMPLES)])]
    print(f"LMD and CSIM on {source}; GRIDTest = {GRID_TEST_SAMPLES:,} samples in "
          f"{GRID_TEST_CLIPS} clips")
    for name, build, frames, projections in cases:
        for workers in sorted({1, threads}):
            with build(workers) as mapper:
                # warm-up: the models loaded, the worker processes started
                mapper(frames[:workers * mapper.min_frames_per_worker])
                seconds, _ = timed(mapper, frames)
            rate = len(frames) / seconds
            text = "; ".join(f"{label}: {n / rate / 60:.1f} min per run"
                             for label, n in projections)
            print(f"  {name}, {workers} process{'es' if workers > 1 else ''}: {rate:7.1f} "
                  f"frames/s ({len(frames)} frames, {seconds:.1f} s); GRIDTest {text} "
                  "(the same again once for the real reference)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.125,
                        help="share of GRIDTest's 44,589 pairs to time (both backends)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fid-images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lmd-frames", type=int, default=300)
    parser.add_argument("--csim-frames", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    count = max(1, round(GRID_TEST_SAMPLES * args.fraction))
    scale = GRID_TEST_SAMPLES / count
    generated, truth = frame_pairs(count, args.seed)
    print(f"SSIM+PSNR over {count:,} frame pairs (96x96 RGB uint8) = {count / GRID_TEST_SAMPLES:.3f}"
          f" of GRIDTest; times x{scale:.2f} give the full {GRID_TEST_SAMPLES:,}; "
          f"torch threads {args.threads}")

    baseline_s, baseline = timed(lambda: (ssim_psnr.ssim_skimage(generated, truth),
                                          ssim_psnr.psnr_skimage(generated, truth)))
    print(f"  scikit-image loop     {baseline_s:8.2f} s  ({baseline_s * scale:8.1f} s for GRIDTest)")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if device == "cuda":  # warm-up: CUDA context and kernels
            torch_scores(generated[:64], truth[:64], device, args.batch_size)
        seconds, ours = timed(torch_scores, generated, truth, device, args.batch_size,
                              sync=device == "cuda")
        difference = max_difference(ours, baseline)
        print(f"  batched torch ({device:4}) {seconds:8.2f} s  ({seconds * scale:8.1f} s for "
              f"GRIDTest)  ratio {baseline_s / seconds:6.1f}x  max |diff| {difference:.2e} "
              f"({'ok' if difference <= TOLERANCE else 'FAILS'} <= {TOLERANCE:g})")

    print(f"FID features: seeded random-weight Inception, 2048-d, {args.fid_images} images "
          "(resized to 299x299 inside the network)")
    images = truth[:args.fid_images]
    for device in devices:
        model = fid.build_inception({"random_weights": True}, device)
        fid.features(images[:8], model, device, batch_size=8)  # warm-up
        seconds, _ = timed(fid.features, images, model, device, 50, sync=device == "cuda")
        print(f"  {device:4}: {len(images) / seconds:8.1f} images/s  ({seconds:.2f} s; "
              f"GRIDTest's {GRID_TEST_SAMPLES:,} generated faces: "
              f"{GRID_TEST_SAMPLES / (len(images) / seconds) / 60:.1f} min)")
    dlib_throughput(args.lmd_frames, args.csim_frames, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
