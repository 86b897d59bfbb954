"""Which torch device a job runs on: the one helper every command uses to pick it."""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """`device` as a torch.device; "auto" is CUDA when present, else the CPU.

    Under torch.distributed, a CUDA device without an index becomes this process's GPU
    (`local_rank`) and is made current, so collectives and new tensors land on it.
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and local_rank is not None:
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device
