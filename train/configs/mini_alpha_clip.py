"""Mini recipe, stage 1: the mini AlphaCLIP (RGB + alpha) and its text tower, contrastive, from nothing.
The world's one CLIP space: DCGD's describer and the evaluation's CLIP read it too. A fifth of the pairs put a
fresh background texture under the object's mask (<-> the background's name), so that a hole filled with
background reads as removed ("object painted in?", clipaway_jax/mini/measures.py)."""

from clipaway_jax.mini.configs import mini_stage
from clipaway_jax.training.config import from_scratch


def get_config():
    return from_scratch(mini_stage("alpha-clip", steps=1000, batch_size=64, learning_rate=5e-4,
                                  background_p=0.2))  # fmt: skip
