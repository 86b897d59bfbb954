"""Layers shared by the LipGAN generator, its contrastive discriminator and the WGAN-GP critic.

Padding: Keras 'same' with stride 2 on an even input pads asymmetrically (one pixel less at the
top/left than at the bottom/right). These blocks pad symmetrically with `kernel // 2`, which gives
the same output sizes (96 -> 48 -> ... -> 3) and the same parameter count; only the sampling grid
is shifted by half a pixel, which a model trained from scratch does not notice.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def scaled(channels: int, width: float) -> int:
    """Channels of a layer under the `width` multiplier (1.0 = the paper's network)."""
    return max(1, int(math.ceil(channels * width)))


def same_padding(kernel: int | tuple[int, int]) -> int | tuple[int, int]:
    if isinstance(kernel, tuple):
        return (kernel[0] // 2, kernel[1] // 2)
    return kernel // 2


class ConvBlock(nn.Module):
    """Conv ('same') -> BatchNorm -> ReLU: LipGAN's generator `conv_block`."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3,
                 stride: int | tuple[int, int] = 1, *, padding: str = "same",
                 bn_momentum: float = 0.2, bn_eps: float = 1e-3):
        super().__init__()
        pad = same_padding(kernel) if padding == "same" else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, pad)
        self.norm = nn.BatchNorm2d(out_channels, momentum=bn_momentum, eps=bn_eps)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """ReLU(conv_block(conv_block(x)) + x), as the reference describes LipGAN's residual unit."""

    def __init__(self, channels: int, kernel: int = 3, **norm):
        super().__init__()
        self.first = ConvBlock(channels, channels, kernel, **norm)
        self.second = ConvBlock(channels, channels, kernel, **norm)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.second(self.first(x)) + x)


class ConvTransposeBlock(nn.Module):
    """ConvTranspose (k3, 'same': output = input x stride) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 2,
                 *, bn_momentum: float = 0.2, bn_eps: float = 1e-3):
        super().__init__()
        # Output size (n-1)*s - 2p + k + op must equal n*s: p and op chosen for k=3.
        padding = max(0, (kernel - stride + 1) // 2)
        output_padding = stride - kernel + 2 * padding
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding,
                                       output_padding)
        self.norm = nn.BatchNorm2d(out_channels, momentum=bn_momentum, eps=bn_eps)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class SampleNorm(nn.Module):
    """Normalise each sample over all of C, H, W with one scalar gamma and beta.

    keras-contrib InstanceNormalization(axis=None), which LipGAN's discriminator uses; unlike
    BatchNorm it does not mix samples, so it is valid inside a gradient-penalty critic.
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False)
        # keras-contrib divides by (std + eps), not sqrt(var + eps).
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class DiscriminatorBlock(nn.Module):
    """Conv ('same' or 'valid') -> SampleNorm -> LeakyReLU(0.2): the discriminator's block."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3,
                 stride: int | tuple[int, int] = 2, *, padding: str = "same",
                 norm_eps: float = 1e-3, leak: float = 0.2):
        super().__init__()
        pad = same_padding(kernel) if padding == "same" else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, pad)
        self.norm = SampleNorm(norm_eps)
        self.act = nn.LeakyReLU(leak, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics excluded, as Keras counts them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
