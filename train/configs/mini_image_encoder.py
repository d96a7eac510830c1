"""Mini recipe, stage 2: the IP-Adapter's image tower (the space the MLP maps into), contrastive against
its own text tower, from nothing."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    return from_scratch(mini_stage("image-encoder", steps=600, batch_size=64, learning_rate=5e-4))
