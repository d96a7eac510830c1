"""The networks (Flax Linen) and their configs; `abstract_params` builds shape-only param trees."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from clipaway_jax.models.clip import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionTransformer,
    zero_shot_logits,
)
from clipaway_jax.models.clipaway import CLIPAwayMLP, MLPConfig, focused_embeddings, projection_block
from clipaway_jax.models.unet import ImageProjection, UNet2DConditionModel, UNetConfig
from clipaway_jax.models.vae import AutoencoderKL, VAEConfig

__all__ = [
    "AutoencoderKL",
    "CLIPAwayMLP",
    "CLIPTextConfig",
    "CLIPTextModel",
    "CLIPVisionConfig",
    "CLIPVisionTransformer",
    "ImageProjection",
    "MLPConfig",
    "UNet2DConditionModel",
    "UNetConfig",
    "VAEConfig",
    "example_inputs",
    "abstract_params",
    "focused_embeddings",
    "projection_block",
    "zero_shot_logits",
]


def example_inputs(module) -> tuple:
    """Smallest inputs that create every param of `module` at init (shapes only matter)."""
    z = jnp.zeros
    if isinstance(module, UNet2DConditionModel):
        cfg, size = module.config, 2 ** (len(module.config.block_out_channels) - 1)
        return (z((1, size, size, cfg.in_channels)), z((1,)), z((1, 1, cfg.cross_attention_dim)))
    if isinstance(module, AutoencoderKL):
        size = 2 ** len(module.config.block_out_channels)
        return (z((1, size, size, module.config.in_channels)),)
    if isinstance(module, CLIPTextModel):
        return (z((1, module.config.max_position_embeddings), jnp.int32),)
    if isinstance(module, CLIPVisionTransformer):
        cfg = module.config
        pixels = z((1, cfg.image_size, cfg.image_size, cfg.num_channels))
        return (pixels, z((1, cfg.image_size, cfg.image_size, 1))) if cfg.alpha else (pixels,)
    if isinstance(module, CLIPAwayMLP):
        return (z((1, module.config.alpha_clip_embed_dim)),)
    if isinstance(module, ImageProjection):
        raise ValueError("ImageProjection needs its embedding width: call abstract_params with inputs")
    raise TypeError(f"no example inputs for {type(module).__name__}")


def abstract_params(module, *inputs, **kwargs):
    """`jax.eval_shape` of `module.init`: the boxed (logically partitioned) param tree, no memory used."""
    inputs = inputs or example_inputs(module)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, **kwargs))
