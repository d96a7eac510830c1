"""What every stage of the mini recipe shares (train/configs/mini_*.py build on it): the mini world's
data and checkpoint where `make mini` puts them, its logging and saving cadence."""

from __future__ import annotations

from ml_collections import ConfigDict

from clipaway_jax.training.config import base_config


def mini_stage(task: str, **fields) -> ConfigDict:
    c = base_config()
    c.task = task
    c.checkpoint = "runs/mini/checkpoint"  # the recipe's checkpoint: each stage adds its networks to it
    c.tfds = "mini_scenes:train"  # `clipaway-jax data scenes --out runs/mini/data`
    c.data_dir = "runs/mini/data"
    c.log_every = 50
    c.save_every = 500
    c.update(fields)
    return c
