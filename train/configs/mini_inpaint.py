"""Mini recipe, stage 4: the 9-channel inpainting UNet with IP-Adapter (its image_proj and attention),
from nothing, reconstructing the image under object and random masks with the image encoder's tokens."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    return from_scratch(mini_stage("inpaint", steps=1800, batch_size=32, learning_rate=5e-4))
