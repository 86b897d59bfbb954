"""Loss functions and the per-batch update schemes: LipGAN's contrastive GAN and WGAN-GP."""

from __future__ import annotations

import contextlib
import random

import torch
import torch.nn.functional as F
from torch import nn

# Precision lives in lipsync.training.precision; imported here for the schemes (and older imports).
from lipsync.training.precision import Precision


def contrastive_loss(distance: torch.Tensor, unsynced: float) -> torch.Tensor:
    """LipGAN's loss: mean((1-y) d^2 + y max(0, 1-d)^2); y = 0 real and synced, 1 otherwise."""
    distance = distance.float()
    return ((1 - unsynced) * distance ** 2
            + unsynced * torch.clamp(1 - distance, min=0) ** 2).mean()


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Stop gradients into `module`'s parameters (the discriminator during the generator step)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def adam(module: nn.Module, options: dict) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=options["learning_rate"],
                            betas=tuple(options["betas"]), eps=options["adam_eps"])


class _Scheme:
    """What every training scheme shares: its options and one Adam optimizer per network."""

    def __init__(self, options: dict):
        self.options = options

    def optimizers(self, networks: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {name: adam(networks[name], self.options)
                for name in ("generator", "discriminator")}


class LipGANScheme(_Scheme):
    """Per batch: discriminator on one negative (fake or unsynced) and the real synced pair, each
    its own Adam step as LipGAN's two train_on_batch calls; then the generator with the
    discriminator frozen on l1_weight * L1 + adversarial_weight * contrastive(D(G(x)), synced).

    The fake the discriminator sees is the generator's training-mode output (LipGAN's Keras
    `predict` used BatchNorm's moving averages): the usual PyTorch GAN pattern, one forward pass.
    """

    def train_step(self, batch: dict, step: int, *, seed: int, networks: dict[str, nn.Module],
                   optimizers: dict, precision: Precision) -> dict:
        o = self.options
        generator, discriminator = networks["generator"], networks["discriminator"]
        g_opt, d_opt = optimizers["generator"], optimizers["discriminator"]
        face_input, mel, target = batch["generator_input"], batch["mel"], batch["target"]
        # Drawn from (seed, step), not a stateful RNG, so every rank makes the same choice.
        unsynced = random.Random(seed * 1_000_003 + step).random() < o["unsynced_probability"]
        with precision.autocast():
            fake = generator(face_input, mel)
            if unsynced:
                negative = discriminator(target, torch.roll(mel, o["unsynced_shift"], dims=0))
            else:
                negative = discriminator(fake.detach(), mel)
        d_negative = contrastive_loss(negative, 1.0)
        precision.update(d_negative, d_opt, discriminator, "discriminator")
        with precision.autocast():
            positive = discriminator(target, mel)
        d_real = contrastive_loss(positive, 0.0)
        precision.update(d_real, d_opt, discriminator, "discriminator")

        with frozen(discriminator), precision.autocast():
            adversarial = contrastive_loss(discriminator(fake, mel), 0.0)
        l1 = F.l1_loss(fake.float(), target)
        g_loss = o["l1_weight"] * l1 + o["adversarial_weight"] * adversarial
        precision.update(g_loss, g_opt, generator, "generator")
        return {"d_negative": d_negative.detach(), "d_real": d_real.detach(),
                "g_l1": l1.detach(), "g_adversarial": adversarial.detach(),
                "g_loss": g_loss.detach()}


def gradient_penalty_scores(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                            mel: torch.Tensor):
    """Critic scores of real, fake and interpolated faces in one pass, plus the interpolates.

    One batched pass is exact because the critic normalises per sample; alpha ~ U[0, 1] per
    sample; the audio is held fixed.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (real + alpha * (fake - real)).requires_grad_(True)
    scores = critic(torch.cat([real, fake, mixed]), torch.cat([mel, mel, mel])).float()
    real_score, fake_score, mixed_score = scores.chunk(3)
    return real_score, fake_score, mixed_score, mixed


class WGANGPScheme(_Scheme):
    """Every batch: one critic step on E[C(fake)] - E[C(real)] + gp_weight * GP; every
    n_critic-th batch also a generator step on -adversarial_weight * E[C(fake)] + l1_weight * L1.
    """

    def train_step(self, batch: dict, step: int, *, seed: int, networks: dict[str, nn.Module],
                   optimizers: dict, precision: Precision) -> dict:
        o = self.options
        generator, critic = networks["generator"], networks["discriminator"]
        g_opt, c_opt = optimizers["generator"], optimizers["discriminator"]
        face_input, mel, target = batch["generator_input"], batch["mel"], batch["target"]
        update_generator = (step + 1) % o["n_critic"] == 0
        with precision.autocast():
            with torch.set_grad_enabled(update_generator):
                fake = generator(face_input, mel)
            real_score, fake_score, mixed_score, mixed = gradient_penalty_scores(
                critic, target, fake.detach().to(target.dtype), mel)
        scaled, scale = precision.scale(mixed_score.sum(), "discriminator")
        (gradient,) = torch.autograd.grad(scaled, mixed, create_graph=True)
        gradient = gradient.float() / scale
        penalty = ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()
        wasserstein = real_score.mean() - fake_score.mean()
        c_loss = -wasserstein + o["gp_weight"] * penalty
        precision.update(c_loss, c_opt, critic, "discriminator")
        losses = {"c_loss": c_loss.detach(), "wasserstein": wasserstein.detach(),
                  "gradient_penalty": penalty.detach()}
        if update_generator:
            with frozen(critic), precision.autocast():
                adversarial = -critic(fake, mel).float().mean()
            l1 = F.l1_loss(fake.float(), target)
            g_loss = o["adversarial_weight"] * adversarial + o["l1_weight"] * l1
            precision.update(g_loss, g_opt, generator, "generator")
            losses.update(g_l1=l1.detach(), g_adversarial=adversarial.detach(),
                          g_loss=g_loss.detach())
        return losses
