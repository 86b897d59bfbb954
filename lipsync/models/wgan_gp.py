"""Plain WGAN-GP: L1WGAN-GP without the L1 term (the thesis reports it does not converge)."""

from __future__ import annotations

from lipsync.models.critic import WGAN_DEFAULTS, build_wgan

DEFAULTS = {**WGAN_DEFAULTS, "l1_weight": 0.0}


def build(options: dict):
    return build_wgan("wgan_gp", options)
