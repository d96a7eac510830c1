"""Mini recipe, stage 3: the KL autoencoder (4x down, 4 latent channels), from nothing; its latent
scale is measured after training and exported as scaling_factor."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    return from_scratch(mini_stage("vae", steps=800, batch_size=32, learning_rate=1e-3))
