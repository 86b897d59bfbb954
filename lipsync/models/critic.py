"""The WGAN-GP critic: LipGAN's discriminator body with an unbounded scalar score."""

from __future__ import annotations

import torch
from torch import nn

from lipsync.models.networks import Embeddings, Generator


class Critic(nn.Module):
    """Scores a (face, mel) pair; higher = more real. No BatchNorm (it would break the penalty)."""

    def __init__(self, width: float, norm_eps: float):
        super().__init__()
        self.embedding = Embeddings(width, norm_eps)
        # A linear head on the concatenated embeddings: the bounded distance d of LipGAN's
        # discriminator is not a valid (1-Lipschitz, unbounded) critic.
        self.head = nn.Linear(2 * self.embedding.channels, 1)

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        face_embedding, audio_embedding = self.embedding(face, mel)
        return self.head(torch.cat([face_embedding, audio_embedding], dim=1)).squeeze(1)


def build_wgan(name: str, options: dict):
    """LipGAN's generator against the critic, trained by the WGAN-GP scheme."""
    from lipsync.models.losses import WGANGPScheme
    from lipsync.models.registry import ModelPair

    generator = Generator(options["width"], options["bn_momentum"], options["bn_eps"])
    critic = Critic(options["width"], options["norm_eps"])
    return ModelPair(name, options, generator, critic, WGANGPScheme(options))
