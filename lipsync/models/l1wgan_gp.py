"""L1WGAN-GP: LipGAN's generator trained against a WGAN-GP critic, plus an L1 reconstruction term."""

from __future__ import annotations

from dataclasses import replace

from lipsync.core.options import Option, defaults
from lipsync.models import lipgan

INPUT_SHAPE = lipgan.INPUT_SHAPE

# Shared with plain WGAN-GP (a reconstruction: the paper publishes none of these).
OPTIONS = {
    # The generator and the critic's body are LipGAN's, with its normalisation settings.
    **{name: lipgan.OPTIONS[name] for name in ("width", "bn_momentum", "bn_eps", "norm_eps")},
    "learning_rate": Option(1e-4, float, "Gulrajani et al. (2017): Adam lr 1e-4.", above=0),
    "betas": Option([0.0, 0.9], list, "Gulrajani et al. (2017): Adam betas (0, 0.9).",
                    minimum=0, maximum=1, length=2),
    "adam_eps": Option(1e-8, float, "Adam epsilon: PyTorch's default.", above=0),
    "gp_weight": Option(10.0, float, "Gradient-penalty weight lambda (Gulrajani et al.: 10).",
                        minimum=0),
    "n_critic": Option(5, int, "Critic updates per generator update (Gulrajani et al.: 5); every "
                       "batch trains the critic and every n_critic-th batch also the generator, "
                       "so progress in samples means the same for every model. Measured on "
                       "real s1 (docs/learning.md): at 1,000 generator steps 5 stalls well "
                       "below 1, which tracks LipGAN; 5 stays until a paper-length run "
                       "decides.", minimum=1),
    "adversarial_weight": Option(1.0, float, "Weight of -E[C(fake)] in the generator loss.",
                                 minimum=0),
    "l1_weight": Option(100.0, float, "Generator loss -E[C(fake)] + l1_weight * L1. "
                        "Unpublished: pix2pix's 100 : 1 ratio of L1 to adversarial loss "
                        "(LipGAN's own 1 : 0.01 is the same ratio).", minimum=0),
}
DEFAULTS = defaults(OPTIONS)


def wgan_options(l1_weight: float, why: str) -> dict[str, Option]:
    """This table with another default L1 weight, and the reason for it."""
    return OPTIONS | {"l1_weight": replace(OPTIONS["l1_weight"], default=l1_weight, doc=why)}


def build(options: dict):
    from lipsync.models.critic import build_wgan

    return build_wgan("l1wgan_gp", options)
