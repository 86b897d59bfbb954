"""L1WGAN-GP: LipGAN's generator trained against a WGAN-GP critic, plus an L1 reconstruction term."""

from __future__ import annotations

from lipsync.models.critic import WGAN_DEFAULTS, build_wgan

DEFAULTS = {
    **WGAN_DEFAULTS,
    # Generator loss -E[C(fake)] + l1_weight * L1. Unpublished: pix2pix's 100 : 1 ratio of L1 to
    # adversarial loss (LipGAN's own 1 : 0.01 is the same ratio).
    "l1_weight": 100.0,
}


def build(options: dict):
    return build_wgan("l1wgan_gp", options)
