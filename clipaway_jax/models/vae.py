"""diffusers' `AutoencoderKL` in Flax (NHWC), names mirroring its state dict."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipaway_jax.models.attention import attention
from clipaway_jax.models.config import ConfigBase
from clipaway_jax.models.layers import Dtype, conv, dense, group_norm
from clipaway_jax.models.unet import Downsample2D, ResnetBlock2D, Upsample2D


@dataclasses.dataclass(frozen=True)
class VAEConfig(ConfigBase):
    """diffusers `AutoencoderKL` config keys; defaults are SD-1.5's VAE."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 512
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    _FIXED: ClassVar = {}

    @property
    def scale_factor(self) -> int:
        """Pixels per latent along each side (8 for SD)."""
        return 2 ** (len(self.block_out_channels) - 1)

    def __post_init__(self):
        for block in self.down_block_types:
            if block != "DownEncoderBlock2D":
                raise ValueError(f"VAE config: unsupported down block {block!r}")
        for block in self.up_block_types:
            if block != "UpDecoderBlock2D":
                raise ValueError(f"VAE config: unsupported up block {block!r}")
        if self.act_fn not in ("silu", "swish"):
            raise ValueError(f"VAE config: unsupported act_fn {self.act_fn!r}")


class DiagonalGaussian(NamedTuple):
    mean: jax.Array  # [B, h, w, latent]
    logvar: jax.Array  # clamped to [-30, 20] as diffusers does

    def sample(self, key: jax.Array) -> jax.Array:
        noise = jax.random.normal(key, self.mean.shape, self.mean.dtype)
        return self.mean + jnp.exp(0.5 * self.logvar) * noise

    def mode(self) -> jax.Array:
        return self.mean


class VAEAttention(nn.Module):
    """The single-head spatial self-attention of the VAE mid block (residual, GroupNorm first)."""

    groups: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        y = group_norm(self.groups, 1e-6, "group_norm", self.dtype)(x).reshape(b, h * w, 1, c)
        proj = lambda name, y: dense(c, name, axes=("embed", "heads"), dtype=self.dtype)(y)
        y = attention(proj("to_q", y), proj("to_k", y), proj("to_v", y))
        y = dense(c, "to_out_0", axes=("heads", "embed"), dtype=self.dtype)(y.reshape(b, h * w, c))
        return x + y.reshape(b, h, w, c)


class VAEMidBlock(nn.Module):
    channels: int
    groups: int
    with_attention: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = ResnetBlock2D(self.channels, self.groups, 1e-6, dtype=self.dtype, name="resnets_0")(x)
        if self.with_attention:
            x = VAEAttention(self.groups, self.dtype, name="attentions_0")(x)
        return ResnetBlock2D(self.channels, self.groups, 1e-6, dtype=self.dtype, name="resnets_1")(x)


class VAEBlock(nn.Module):
    """DownEncoderBlock2D (resample "down") or UpDecoderBlock2D (resample "up"): resnets, then resampling."""

    channels: int
    num_layers: int
    groups: int
    resample: str | None = None  # "down", "up" or None (the last block)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for j in range(self.num_layers):
            x = ResnetBlock2D(self.channels, self.groups, 1e-6, dtype=self.dtype, name=f"resnets_{j}")(x)
        if self.resample == "down":
            # diffusers pads right and bottom by one, then convolves without padding
            x = Downsample2D(self.channels, ((0, 1), (0, 1)), self.dtype, name="downsamplers_0")(x)
        elif self.resample == "up":
            x = Upsample2D(self.channels, self.dtype, name="upsamplers_0")(x)
        return x


class Encoder(nn.Module):
    config: VAEConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        x = conv(cfg.block_out_channels[0], "conv_in", dtype=self.dtype)(x)
        last = len(cfg.block_out_channels) - 1
        for i, channels in enumerate(cfg.block_out_channels):
            block = VAEBlock(
                channels,
                cfg.layers_per_block,
                cfg.norm_num_groups,
                "down" if i < last else None,
                self.dtype,
                name=f"down_blocks_{i}",
            )
            x = block(x)
        x = VAEMidBlock(
            cfg.block_out_channels[-1],
            cfg.norm_num_groups,
            cfg.mid_block_add_attention,
            self.dtype,
            name="mid_block",
        )(x)
        x = jax.nn.silu(group_norm(cfg.norm_num_groups, 1e-6, "conv_norm_out", self.dtype)(x))
        return conv(2 * cfg.latent_channels, "conv_out", dtype=self.dtype)(x)


class Decoder(nn.Module):
    config: VAEConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        x = conv(cfg.block_out_channels[-1], "conv_in", dtype=self.dtype)(z)
        x = VAEMidBlock(
            cfg.block_out_channels[-1],
            cfg.norm_num_groups,
            cfg.mid_block_add_attention,
            self.dtype,
            name="mid_block",
        )(x)
        last = len(cfg.block_out_channels) - 1
        for i, channels in enumerate(reversed(cfg.block_out_channels)):
            block = VAEBlock(
                channels,
                cfg.layers_per_block + 1,
                cfg.norm_num_groups,
                "up" if i < last else None,
                self.dtype,
                name=f"up_blocks_{i}",
            )
            x = block(x)
        x = jax.nn.silu(group_norm(cfg.norm_num_groups, 1e-6, "conv_norm_out", self.dtype)(x))
        return conv(cfg.out_channels, "conv_out", dtype=self.dtype)(x)


class AutoencoderKL(nn.Module):
    """`encode(images in [-1, 1]) -> DiagonalGaussian`; `decode(latents) -> images`.

    Latents here are unscaled; multiply by `config.scaling_factor` for the UNet, as diffusers' pipelines do.
    """

    config: VAEConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg, self.dtype)
        self.decoder = Decoder(cfg, self.dtype)
        if cfg.use_quant_conv:
            self.quant_conv = conv(2 * cfg.latent_channels, kernel_size=1, padding=0, dtype=self.dtype)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = conv(cfg.latent_channels, kernel_size=1, padding=0, dtype=self.dtype)

    def encode(self, images: jax.Array) -> DiagonalGaussian:  # [B, H, W, 3]
        moments = self.encoder(images.astype(self.dtype))
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return DiagonalGaussian(mean, jnp.clip(logvar, -30.0, 20.0))

    def decode(self, latents: jax.Array) -> jax.Array:  # [B, h, w, latent] -> [B, 8h, 8w, 3]
        z = latents.astype(self.dtype)
        if self.config.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Round trip, used to create every param at init."""
        posterior = self.encode(images)
        return self.decode(posterior.mode() if key is None else posterior.sample(key))
