"""LipGAN (Prajwal et al. 2019): its options and the build of its generator, contrastive sync
discriminator and training scheme. Torch is imported only by `build` (the workflow reads OPTIONS
when it plans)."""

from __future__ import annotations

from lipsync.core.options import Option, defaults

# The networks' fixed input (lipsync.models.networks): the config must produce exactly this.
INPUT_SHAPE = {"image_size": 96, "n_mels": 80, "mel_window": 27}

# Every option of the LipGAN model; values the paper does not publish say where they come from.
OPTIONS = {
    "width": Option(1.0, float, "Channel multiplier: 1.0 is the paper's network (~49.5 M "
                    "generator parameters); tests and the CPU demo use a narrow one.", above=0),
    "bn_momentum": Option(0.2, float, "LipGAN's conv blocks use BatchNormalization(momentum=.8): "
                          "0.2 in PyTorch's convention (Keras' default 0.99 would leave the "
                          "running statistics that evaluation uses far behind).",
                          minimum=0, maximum=1),
    "bn_eps": Option(1e-3, float, "Keras BatchNormalization epsilon.", above=0),
    "norm_eps": Option(1e-3, float, "keras-contrib InstanceNormalization default epsilon "
                       "(the discriminator's per-sample norm).", above=0),
    "learning_rate": Option(1e-4, float, "LipGAN: Adam, lr 1e-4.", above=0),
    "betas": Option([0.9, 0.999], list, "Adam betas: Keras' defaults, as LipGAN.", minimum=0,
                    maximum=1, length=2),
    "adam_eps": Option(1e-7, float, "Adam epsilon: Keras' default.", above=0),
    "l1_weight": Option(1.0, float, "LipGAN's generator loss: 1.0 * L1 + 0.01 * "
                        "contrastive(D(G(x)), synced).", minimum=0),
    "adversarial_weight": Option(0.01, float, "Weight of the contrastive term of the generator "
                                 "loss (LipGAN: 0.01).", minimum=0),
    "unsynced_shift": Option(10, int, "Unsynced pairs roll the audio batch by this many samples "
                             "(LipGAN: np.roll by 10).", minimum=1),
    "unsynced_probability": Option(0.5, float, "Per batch, the discriminator's negative is (real, "
                                   "rolled audio) with this probability and (fake, audio) "
                                   "otherwise; LipGAN picks either at random, i.e. 0.5.",
                                   minimum=0, maximum=1),
}
DEFAULTS = defaults(OPTIONS)


def build(options: dict):
    """The LipGAN generator, discriminator and training scheme for resolved `options`."""
    from lipsync.models.losses import LipGANScheme
    from lipsync.models.networks import Discriminator, Generator
    from lipsync.models.registry import ModelPair

    generator = Generator(options["width"], options["bn_momentum"], options["bn_eps"])
    discriminator = Discriminator(options["width"], options["norm_eps"])
    return ModelPair("lipgan", options, generator, discriminator, LipGANScheme(options))
