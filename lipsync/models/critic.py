"""The WGAN-GP critic: LipGAN's discriminator body with an unbounded scalar score."""

from __future__ import annotations

import torch
from torch import nn

from lipsync.models.lipgan import Embeddings


class Critic(nn.Module):
    """Scores a (face, mel) pair; higher = more real. No BatchNorm (it would break the penalty)."""

    def __init__(self, width: float = 1.0, norm_eps: float = 1e-3):
        super().__init__()
        self.embedding = Embeddings(width, norm_eps)
        # A linear head on the concatenated embeddings: the bounded distance d of LipGAN's
        # discriminator is not a valid (1-Lipschitz, unbounded) critic.
        self.head = nn.Linear(2 * self.embedding.channels, 1)

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        face_embedding, audio_embedding = self.embedding(face, mel)
        return self.head(torch.cat([face_embedding, audio_embedding], dim=1)).squeeze(1)


# Options shared by L1WGAN-GP and WGAN-GP (a reconstruction: the paper publishes none of them).
WGAN_DEFAULTS = {
    "width": 1.0,
    "bn_momentum": 0.2,  # generator BatchNorm as in LipGAN (Keras momentum .8)
    "bn_eps": 1e-3,
    "norm_eps": 1e-3,     # critic's per-sample norm as LipGAN's discriminator
    # Gulrajani et al. (2017) defaults: Adam lr 1e-4, betas (0, 0.9), lambda 10, n_critic 5.
    "learning_rate": 1e-4,
    "betas": [0.0, 0.9],
    "adam_eps": 1e-8,
    "gp_weight": 10.0,
    # Critic updates per generator update; every batch trains the critic and every n_critic-th
    # batch also the generator (so progress in samples means the same for every model).
    "n_critic": 5,
    "adversarial_weight": 1.0,
}


def build_wgan(name: str, options: dict):
    from lipsync.models.lipgan import Generator
    from lipsync.models.losses import WGANGPScheme
    from lipsync.models.registry import ModelPair

    generator = Generator(options["width"], options["bn_momentum"], options["bn_eps"])
    critic = Critic(options["width"], options["norm_eps"])
    return ModelPair(name, options, generator, critic, WGANGPScheme(options))
