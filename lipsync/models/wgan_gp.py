"""Plain WGAN-GP: L1WGAN-GP without the L1 term (the thesis reports it does not converge)."""

from __future__ import annotations

from lipsync.core.options import defaults
from lipsync.models import l1wgan_gp

INPUT_SHAPE = l1wgan_gp.INPUT_SHAPE
OPTIONS = l1wgan_gp.wgan_options(0.0, "Plain WGAN-GP has no L1 term; > 0 makes it L1WGAN-GP.")
DEFAULTS = defaults(OPTIONS)


def build(options: dict):
    from lipsync.models.critic import build_wgan

    return build_wgan("wgan_gp", options)
