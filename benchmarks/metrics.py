"""Metrics benchmark: batched torch SSIM+PSNR against scikit-image's per-frame loop; FID throughput.

Prints, from one run: seconds for SSIM+PSNR over the same frame pairs with the batched torch
backend (CPU, and GPU when present) and with scikit-image's loop, their ratio, the largest absolute
difference (must be <= 1e-5), and the times scaled to GRIDTest's 44,589 pairs when a fraction was
timed; then FID feature-extraction throughput (images/s) of the seeded random-weight Inception
(2048-d) on CPU and on GPU when present.

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

from lipsync.metrics import fid, ssim_psnr  # noqa: E402

GRID_TEST_SAMPLES = 44_589
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.125,
                        help="share of GRIDTest's 44,589 pairs to time (both backends)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fid-images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
