"""Mini recipe, stage 3: the KL autoencoder (4x down, 4 latent channels), from nothing; its latent
scale is measured after training and exported as scaling_factor. Batch 8 and L1 + squared error: at the
same compute, four times the updates at a quarter of the batch gained 1.6 dB of round trip, the squared
error 0.4 dB more (bench/RESULTS.md, "First VAE trials for issue #25")."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    return from_scratch(mini_stage("vae", steps=3200, batch_size=8, learning_rate=1e-3,
                                  vae_l2_weight=1.0))  # fmt: skip
