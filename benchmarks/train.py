"""Training throughput (samples/s) of each model, beside the data loader's throughput.

Usage: python benchmarks/train.py [--dataset datasets/small.h5] [--width 0.25] [--steps 5]
On CUDA it also measures mixed precision and peak GPU memory (default batch 96, full width).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from lipsync.data.dataset import collate
from lipsync.models import registry
from lipsync.models.losses import Precision


class RandomSamples(Dataset):
    """In-memory random items (the loader's ceiling) when no packed dataset is given."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"generator_input": torch.rand(6, 96, 96, generator=g),
                "mel": torch.randn(1, 80, 27, generator=g),
                "target": torch.rand(3, 96, 96, generator=g),
                "reference": torch.rand(3, 96, 96, generator=g)}


def loader_rate(dataset, batch_size: int, batches: int, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate, drop_last=True)
    start, seen = time.perf_counter(), 0
    for k, batch in enumerate(loader):
        seen += batch["target"].shape[0]
        if k + 1 >= batches:
            break
    return seen / (time.perf_counter() - start)


def train_rate(name: str, device: torch.device, width: float, batch_size: int, steps: int,
               mixed_precision) -> tuple[float, float | None]:
    torch.manual_seed(0)
    pair = registry.build(name, {"width": width})
    generator, discriminator = pair.generator.to(device), pair.discriminator.to(device)
    networks = {"generator": generator, "discriminator": discriminator}
    optimizers = pair.scheme.optimizers(networks)
    precision = Precision(device, mixed_precision)
    batch = {"generator_input": torch.rand(batch_size, 6, 96, 96, device=device),
             "mel": torch.randn(batch_size, 1, 80, 27, device=device),
             "target": torch.rand(batch_size, 3, 96, 96, device=device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def run(n, offset):
        for step in range(n):
            pair.scheme.train_step(batch, offset + step, seed=0, networks=networks,
                                   optimizers=optimizers, precision=precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # WGAN-GP updates the generator on every n_critic-th batch: time whole cycles only
    cycle = pair.options.get("n_critic", 1)
    steps = -(-steps // cycle) * cycle
    run(max(2, cycle), 0)  # warm-up (cuDNN autotuning, allocator); ends on a cycle boundary
    start = time.perf_counter()
    run(steps, max(2, cycle))
    rate = steps * batch_size / (time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return rate, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="packed split; default random samples")
    parser.add_argument("--models", default="lipgan,l1wgan_gp,wgan_gp")
    parser.add_argument("--width", type=float, default=None, help="default 1.0 CUDA, 0.25 CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default 96 CUDA, 8 CPU")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    width = args.width or (1.0 if cuda else 0.25)
    batch_size = args.batch_size or (96 if cuda else 8)
    if args.dataset:
        from lipsync.data.dataset import LipSyncDataset

        dataset = LipSyncDataset(args.dataset)
    else:
        dataset = RandomSamples(batch_size * (args.steps + 1))
    loading = loader_rate(dataset, batch_size, args.steps, args.workers)
    print(f"loader ({args.dataset or 'random in-memory'}, {args.workers} workers): "
          f"{loading:.1f} samples/s")
    settings = [(torch.device("cpu"), False)]
    if cuda:
        settings = [(torch.device("cuda"), False), (torch.device("cuda"), True)]
    print(f"width {width}, batch {batch_size}, {args.steps} timed steps")
    for name in args.models.split(","):
        for device, mixed in settings:
            rate, memory = train_rate(name, device, width, batch_size, args.steps, mixed)
            label = Precision(device, mixed).name
            extra = f", peak GPU memory {memory:.2f} GiB" if memory is not None else ""
            print(f"{name:10s} {device.type} {label:8s}: {rate:8.1f} samples/s "
                  f"(loader / training = {loading / rate:.2f}){extra}")


if __name__ == "__main__":
    main()
