"""A tiny in-memory stand-in for LipSyncDataset: the same item dict, deterministic per index."""

from __future__ import annotations

import os
import signal

import torch
from torch.utils.data import Dataset


class FakeLipSyncDataset(Dataset):
    """`length` samples of random faces and mels; the reference changes with set_epoch.

    `nan_at`: item index whose mel is NaN (a corrupt sample); `sigterm_at`: item index whose
    reading sends SIGTERM to this process (SLURM's time limit arriving mid-training).
    """

    def __init__(self, length: int = 32, *, size: int = 96, seed: int = 0,
                 nan_at: int | None = None, sigterm_at: int | None = None):
        self.length, self.size, self.seed = length, size, seed
        self.nan_at, self.sigterm_at = nan_at, sigterm_at
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        if index == self.sigterm_at:
            self.sigterm_at = None  # once
            os.kill(os.getpid(), signal.SIGTERM)
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        target = torch.rand(3, self.size, self.size, generator=g)
        r = torch.Generator().manual_seed(self.seed * 100_003 + index + 7 * self.epoch + 1)
        reference = torch.rand(3, self.size, self.size, generator=r)
        masked = target.clone()
        masked[:, self.size // 2:] = 0
        mel = torch.randn(1, 80, 27, generator=g)
        if index == self.nan_at:
            mel[:] = float("nan")
        return {"generator_input": torch.cat([reference, masked]), "mel": mel,
                "target": target, "reference": reference}
