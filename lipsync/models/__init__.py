"""Networks: shared blocks, LipGAN's generator and discriminator, the WGAN-GP critic, their loss
schemes, SyncNet and the lip reader; `registry.py` builds the generator pairs by name."""
