"""Does training help? Held-out L1, SSIM, PSNR of generators trained for a bounded time, against
the identity baseline (the reference frame copied unchanged).

Usage: python benchmarks/learning.py --seconds 300 [--train results/datasets/small.h5]
       [--test results/datasets/test.h5] [--models lipgan,l1wgan_gp] [--width 0.25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lipsync.checkpoint import load_generator
from lipsync.data.dataset import LipSyncDataset
from lipsync.train import evaluate, training_loop, validation_subset


def train_for(seconds: float, model: str, train: str, run_dir: Path, width: float,
              learning_rate: float, batch_size: int, chunk_samples: int) -> tuple[Path, int]:
    """Train in chunks (each resumes the last) until `seconds` have passed."""
    deadline = time.perf_counter() + seconds
    total = 0
    result = None
    while time.perf_counter() < deadline:
        total += chunk_samples
        result = training_loop(train_set=train, run_dir=run_dir, model=model,
                               model_options={"width": width, "learning_rate": learning_rate},
                               batch_size=batch_size,
                               total_samples=total, checkpoint_every_samples=chunk_samples,
                               log_every_samples=chunk_samples, num_workers=2,
                               progress_bar=False, keep_checkpoints=1)
    return Path(result["output"]), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--train", default="results/datasets/small.h5")
    parser.add_argument("--test", default="results/datasets/test.h5")
    parser.add_argument("--models", default="lipgan,l1wgan_gp")
    parser.add_argument("--width", type=float, default=None, help="default 1.0 CUDA, 0.25 CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default 96 CUDA, 16 CPU")
    parser.add_argument("--test-samples", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default 1e-4 CUDA, 1e-3 CPU")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    width = args.width or (1.0 if cuda else 0.5)
    # On CPU a few minutes are a few hundred steps: Keras' default Adam rate (1e-3), which LipGAN
    # falls back to without --lr, gets there; on a GPU the paper's 1e-4.
    learning_rate = args.learning_rate or (1e-4 if cuda else 1e-3)
    batch_size = args.batch_size or (96 if cuda else 16)
    device = torch.device("cuda" if cuda else "cpu")
    test = validation_subset(LipSyncDataset(args.test, fixed_reference=True), args.test_samples)
    baseline = evaluate(None, test, device=device)
    print(f"test samples {baseline['samples']}, width {width}, batch {batch_size}, "
          f"learning rate {learning_rate}, "
          f"{args.seconds:.0f} s per model on {device.type}")
    print(f"{'identity':10s} L1 {baseline['l1']:.4f}  SSIM {baseline['ssim']:.4f}  "
          f"PSNR {baseline['psnr']:.2f} dB")
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            output, samples = train_for(args.seconds, model, args.train, Path(folder) / model,
                                        width, learning_rate, batch_size,
                                        chunk_samples=batch_size * 50)
            generator, _ = load_generator(output, device)
            scores = evaluate(generator, test, device=device)
            print(f"{model:10s} L1 {scores['l1']:.4f}  SSIM {scores['ssim']:.4f}  "
                  f"PSNR {scores['psnr']:.2f} dB after {samples} samples "
                  f"(SSIM / identity = {scores['ssim'] / baseline['ssim']:.2f}, "
                  f"L1 / identity = {scores['l1'] / baseline['l1']:.2f})")


if __name__ == "__main__":
    main()
