"""LipGAN's networks (Prajwal et al. 2019): the residual generator, the contrastive sync
discriminator and the embedding body the WGAN-GP critic shares. Fixed input: 96x96 faces, 80x27 mels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipsync.models.blocks import (
    ConvBlock,
    ConvTransposeBlock,
    DiscriminatorBlock,
    ResidualBlock,
    scaled,
)


class Generator(nn.Module):
    """Face encoder (reference ++ masked target) + audio encoder -> decoder with skips -> face."""

    def __init__(self, width: float, bn_momentum: float, bn_eps: float):
        super().__init__()
        norm = {"bn_momentum": bn_momentum, "bn_eps": bn_eps}

        def c(n: int) -> int:
            return scaled(n, width)

        def stage(cin, cout, kernel, stride, residuals, padding="same"):
            layers = [ConvBlock(cin, cout, kernel, stride, padding=padding, **norm)]
            layers += [ResidualBlock(cout, 3, **norm) for _ in range(residuals)]
            return nn.Sequential(*layers)

        # Face encoder on 6 x 96 x 96; each stage's output is a skip for the decoder.
        self.face = nn.ModuleList([
            stage(6, c(32), 7, 1, 0),            # 96
            stage(c(32), c(64), 5, 2, 2),        # 48
            stage(c(64), c(128), 3, 2, 3),       # 24
            stage(c(128), c(256), 3, 2, 2),      # 12
            stage(c(256), c(512), 3, 2, 2),      # 6
            stage(c(512), c(512), 3, 2, 0),      # 3
            nn.Sequential(ConvBlock(c(512), c(512), 3, 1, padding="valid", **norm),  # 1
                          ConvBlock(c(512), c(512), 1, 1, **norm)),
        ])
        # Audio encoder on 1 x 80 x 27 (mel bands x time steps).
        self.audio = nn.Sequential(
            stage(1, c(32), 3, 1, 2),               # 80 x 27
            stage(c(32), c(64), 3, 3, 2),           # 27 x 9
            stage(c(64), c(128), 3, (3, 1), 2),     # 9 x 9
            stage(c(128), c(256), 3, 3, 2),         # 3 x 3
            ConvBlock(c(256), c(512), 3, 1, padding="valid", **norm),  # 1 x 1
            ConvBlock(c(512), c(512), 1, 1, **norm),
        )

        def up(cin, cout, stride, residuals):
            layers = [ConvTransposeBlock(cin, cout, 3, stride, **norm)]
            layers += [ResidualBlock(cout, 3, **norm) for _ in range(residuals)]
            return nn.Sequential(*layers)

        # Decoder: each step's output is concatenated with the face skip of the same size.
        self.decoder = nn.ModuleList([
            up(2 * c(512), c(512), 3, 0),             # 3, ++ skip 3 (512)
            up(2 * c(512), c(512), 2, 2),             # 6, ++ skip 6 (512)
            up(2 * c(512), c(256), 2, 2),             # 12, ++ skip 12 (256)
            up(2 * c(256), c(128), 2, 2),             # 24, ++ skip 24 (128)
            up(2 * c(128), c(64), 2, 2),              # 48, ++ skip 48 (64)
            up(2 * c(64), c(32), 2, 0),               # 96, ++ skip 96 (32)
        ])
        self.head = nn.Sequential(
            ConvBlock(2 * c(32), c(16), 3, 1, **norm),
            ConvBlock(c(16), c(16), 3, 1, **norm),
            nn.Conv2d(c(16), 3, 1),
            nn.Sigmoid(),
        )

    def forward(self, face_input: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        skips = []
        x = face_input
        for stage in self.face:
            x = stage(x)
            skips.append(x)
        face_embedding = skips.pop()  # 1 x 1
        audio_embedding = self.audio(mel)
        x = torch.cat([face_embedding, audio_embedding], dim=1)
        for block in self.decoder:
            x = torch.cat([block(x), skips.pop()], dim=1)
        return self.head(x)


class Discriminator(nn.Module):
    """Embeds a face and a mel window; outputs the distance between the L2-normalised embeddings.

    d ranges over [0, 2]: small for a real face in sync with its audio.
    """

    def __init__(self, width: float, norm_eps: float):
        super().__init__()
        self.embedding = Embeddings(width, norm_eps)

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        face_embedding, audio_embedding = self.embedding(face, mel)
        face_embedding = F.normalize(face_embedding, dim=1)
        audio_embedding = F.normalize(audio_embedding, dim=1)
        # The epsilon keeps the gradient of the norm finite when both embeddings coincide.
        return torch.sqrt(((face_embedding - audio_embedding) ** 2).sum(dim=1) + 1e-12)


class Embeddings(nn.Module):
    """The discriminator body: face branch on the whole 96x96 face and audio branch, 512-d each."""

    def __init__(self, width: float, norm_eps: float):
        super().__init__()

        def c(n: int) -> int:
            return scaled(n, width)

        block = {"norm_eps": norm_eps}
        self.face = nn.Sequential(
            DiscriminatorBlock(3, c(64), 7, 2, **block),        # 48
            DiscriminatorBlock(c(64), c(128), 5, 2, **block),   # 24
            DiscriminatorBlock(c(128), c(256), 3, 2, **block),  # 12
            DiscriminatorBlock(c(256), c(512), 3, 2, **block),  # 6
            DiscriminatorBlock(c(512), c(512), 3, 2, **block),  # 3
            nn.Conv2d(c(512), c(512), 3, 1, 0),                 # 1, no norm
        )
        self.audio = nn.Sequential(
            DiscriminatorBlock(1, c(32), 3, 1, **block),             # 80 x 27
            DiscriminatorBlock(c(32), c(64), 3, 3, **block),         # 27 x 9
            DiscriminatorBlock(c(64), c(128), 3, (3, 1), **block),   # 9 x 9
            DiscriminatorBlock(c(128), c(256), 3, 3, **block),       # 3 x 3
            DiscriminatorBlock(c(256), c(512), 3, 1, padding="valid", **block),  # 1 x 1
            nn.Conv2d(c(512), c(512), 1),
        )
        self.channels = c(512)

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.face(face).flatten(1), self.audio(mel).flatten(1)
