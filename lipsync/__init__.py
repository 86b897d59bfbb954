"""lipsync: a reproducible pipeline for lip-sync GANs (LipGAN, L1WGAN-GP) on the GRID corpus."""

__version__ = "0.1.0"
