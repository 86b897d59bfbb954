"""Data-parallel training over processes (torchrun or srun): the process environment, the process
group, and the averaging of losses and gradients over ranks. In one process everything is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn


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


@contextlib.contextmanager
def process_group(rank: int, world: int, device: torch.device) -> Iterator[None]:
    """Join the default process group for the block, unless a caller already made one."""
    own = world > 1 and not dist.is_initialized()
    if own:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    try:
        yield
    finally:
        if own:
            dist.destroy_process_group()


def all_mean(values: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of `values` over ranks (in place)."""
    if world > 1:
        dist.all_reduce(values)
        values /= world
    return values


def all_gather(value: object, world: int) -> list:
    """Every rank's `value`, in rank order."""
    if world == 1:
        return [value]
    gathered = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def average_gradients(module: nn.Module) -> None:
    """All-reduce the gradients of `module` over ranks (a no-op in a single process).

    Done by hand rather than with DistributedDataParallel (as NVlabs' stylegan2-ada does): GAN
    steps freeze the discriminator inside the generator's step, run critic-only batches and take
    double-backward gradient penalties, none of which fit DDP's one-forward-one-backward reducer.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n
