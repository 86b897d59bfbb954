"""Mixed precision for training: autocast, gradient scaling and the optimizer step (with the
gradients averaged over ranks under torch.distributed)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from lipsync.training.distributed import average_gradients


class Precision:
    """Autocast, gradient scaling and (under torch.distributed) gradient averaging.

    `mode`: True picks bf16 where the GPU has it, else fp16 with a GradScaler; "bf16", "fp16" or
    False force a choice. On CPU everything runs in float32.
    """

    def __init__(self, device: torch.device, mode: bool | str = True):
        self.device = device
        self.dtype = None
        if device.type == "cuda" and mode:
            if mode == "fp16" or (mode is True and not torch.cuda.is_bf16_supported()):
                self.dtype = torch.float16
            else:
                self.dtype = torch.bfloat16
        self._fp16 = self.dtype == torch.float16
        # One scaler per network, made at its first step: networks step on separate backward
        # passes. Checkpoints save them by name.
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    def scaler(self, which: str) -> torch.amp.GradScaler:
        """The gradient scaler of network `which` (a no-op one unless fp16)."""
        if which not in self.scalers:
            self.scalers[which] = torch.amp.GradScaler("cuda", enabled=self._fp16)
        return self.scalers[which]

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor, which: str) -> tuple[torch.Tensor, float]:
        scaler = self.scaler(which)
        if not scaler.is_enabled():
            return loss, 1.0
        return scaler.scale(loss), float(scaler.get_scale())

    def update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, module: nn.Module,
               which: str) -> None:
        """Backward `loss`, average gradients over ranks, step `optimizer`."""
        optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler(which)
        scaler.scale(loss).backward()
        average_gradients(module)
        scaler.step(optimizer)
        scaler.update()
