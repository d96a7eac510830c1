"""diffusers' `UNet2DConditionModel` (SD-1.5 family) in Flax, with IP-Adapter cross-attention.

Tensors are NHWC. Submodule names mirror diffusers' state-dict keys (`down_blocks.0.resnets.1`
becomes `down_blocks_0/resnets_1`), so the converter is a short table.

IP-Adapter: every cross-attention (`attn2`) can also attend to image tokens through its own
`to_k_ip`/`to_v_ip`; `out = attn(text) + ip_scale * attn(image)`. Without image tokens the
network is exactly the plain UNet.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipaway_jax.models.attention import attention, merge_heads, split_heads
from clipaway_jax.models.config import ConfigBase
from clipaway_jax.models.layers import Dtype, activation, conv, dense, group_norm, layer_norm

CROSS_ATTN_DOWN = "CrossAttnDownBlock2D"
PLAIN_DOWN = "DownBlock2D"
CROSS_ATTN_UP = "CrossAttnUpBlock2D"
PLAIN_UP = "UpBlock2D"


@dataclasses.dataclass(frozen=True)
class UNetConfig(ConfigBase):
    """diffusers `UNet2DConditionModel` config keys; defaults are SD-1.5 inpainting."""

    sample_size: int = 64
    in_channels: int = 9
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[str, ...] = (CROSS_ATTN_DOWN, CROSS_ATTN_DOWN, CROSS_ATTN_DOWN, PLAIN_DOWN)
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = (PLAIN_UP, CROSS_ATTN_UP, CROSS_ATTN_UP, CROSS_ATTN_UP)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    dropout: float = 0.0  # training-time only; inference ignores it as torch's eval mode does
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 768
    transformer_layers_per_block: int | tuple[int, ...] = 1
    # diffusers quirk kept verbatim: for SD-1.x `attention_head_dim` is the number of heads.
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    use_linear_projection: bool = False
    upcast_attention: bool = False

    _FIXED: ClassVar = {
        "resnet_time_scale_shift": "default",
        "time_embedding_type": "positional",
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "resnet_out_scale_factor": 1.0,
        "attention_type": "default",
        "addition_embed_type_num_heads": 64,
    }

    def __post_init__(self):
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"UNet config: {n} block_out_channels but {len(self.down_block_types)} down and "
                f"{len(self.up_block_types)} up block types"
            )
        known = {CROSS_ATTN_DOWN, PLAIN_DOWN, CROSS_ATTN_UP, PLAIN_UP}
        for block in (*self.down_block_types, *self.up_block_types):
            if block not in known:
                raise ValueError(f"UNet config: unsupported block type {block!r}; supported: {sorted(known)}")
        if self.mid_block_type != "UNetMidBlock2DCrossAttn":
            raise ValueError(f"UNet config: unsupported mid_block_type {self.mid_block_type!r}")

    def _per_block(self, value) -> tuple[int, ...]:
        return tuple(value) if isinstance(value, tuple) else (value,) * len(self.block_out_channels)

    @property
    def heads(self) -> tuple[int, ...]:
        return self._per_block(self.num_attention_heads or self.attention_head_dim)

    @property
    def transformer_layers(self) -> tuple[int, ...]:
        return self._per_block(self.transformer_layers_per_block)


def timestep_embedding(timesteps: jax.Array, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> jax.Array:
    """diffusers' `get_timestep_embedding`, computed in float32 as there."""
    half = dim // 2
    exponent = -math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class ResnetBlock2D(nn.Module):
    out_channels: int
    groups: int
    eps: float
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        h = jax.nn.silu(group_norm(self.groups, self.eps, "norm1", self.dtype)(x))
        h = conv(self.out_channels, "conv1", dtype=self.dtype)(h)
        if temb is not None:
            t = dense(self.out_channels, "time_emb_proj", dtype=self.dtype)(jax.nn.silu(temb))
            h = h + t[:, None, None, :]
        h = jax.nn.silu(group_norm(self.groups, self.eps, "norm2", self.dtype)(h))
        h = conv(self.out_channels, "conv2", dtype=self.dtype)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, "conv_shortcut", kernel_size=1, padding=0, dtype=self.dtype)(x)
        return (x + h) / self.output_scale_factor


class Attention(nn.Module):
    """diffusers `Attention` as used in SD transformer blocks (q/k/v without bias)."""

    heads: int
    head_dim: int
    upcast: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, image_tokens=None, ip_scale=1.0):
        inner = self.heads * self.head_dim
        context = x if context is None else context
        proj = lambda name, y: split_heads(
            dense(inner, name, axes=("embed", "heads"), use_bias=False, dtype=self.dtype)(y), self.heads
        )
        q = proj("to_q", x)
        out = self._attend(q, proj("to_k", context), proj("to_v", context))
        if image_tokens is not None:
            ip = self._attend(q, proj("to_k_ip", image_tokens), proj("to_v_ip", image_tokens))
            out = out + jnp.asarray(ip_scale, out.dtype) * ip
        return dense(x.shape[-1], "to_out_0", axes=("heads", "embed"), dtype=self.dtype)(merge_heads(out))

    def _attend(self, q, k, v):
        if self.upcast:
            return attention(q.astype(jnp.float32), k.astype(jnp.float32), v).astype(q.dtype)
        return attention(q, k, v)


class GEGLU(nn.Module):
    inner_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(2 * self.inner_dim, "proj", dtype=self.dtype)(x)
        h, gate = jnp.split(h, 2, axis=-1)
        return h * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    mult: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = GEGLU(x.shape[-1] * self.mult, self.dtype, name="net_0")(x)
        return dense(x.shape[-1], "net_2", axes=("mlp", "embed"), dtype=self.dtype)(h)


class BasicTransformerBlock(nn.Module):
    heads: int
    head_dim: int
    upcast: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, image_tokens=None, ip_scale=1.0):
        attn = lambda name: Attention(self.heads, self.head_dim, self.upcast, self.dtype, name=name)
        x = x + attn("attn1")(layer_norm(1e-5, "norm1", self.dtype)(x))
        x = x + attn("attn2")(layer_norm(1e-5, "norm2", self.dtype)(x), context, image_tokens, ip_scale)
        return x + FeedForward(dtype=self.dtype, name="ff")(layer_norm(1e-5, "norm3", self.dtype)(x))


class Transformer2DModel(nn.Module):
    heads: int
    num_layers: int
    groups: int
    use_linear_projection: bool = False
    upcast: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, image_tokens=None, ip_scale=1.0):
        b, hgt, wid, channels = x.shape
        project = (
            (lambda name: dense(channels, name, axes=("embed", "embed"), dtype=self.dtype))
            if self.use_linear_projection
            else (lambda name: conv(channels, name, kernel_size=1, padding=0, dtype=self.dtype))
        )
        h = group_norm(self.groups, 1e-6, "norm", self.dtype)(x)
        if not self.use_linear_projection:
            h = project("proj_in")(h)
        h = h.reshape(b, hgt * wid, channels)
        if self.use_linear_projection:
            h = project("proj_in")(h)
        for i in range(self.num_layers):
            block = BasicTransformerBlock(
                self.heads, channels // self.heads, self.upcast, self.dtype, name=f"transformer_blocks_{i}"
            )
            h = block(h, context, image_tokens, ip_scale)
        if self.use_linear_projection:
            h = project("proj_out")(h)
        h = h.reshape(b, hgt, wid, channels)
        if not self.use_linear_projection:
            h = project("proj_out")(h)
        return h + x


class UNet2DConditionModel(nn.Module):
    config: UNetConfig
    dtype: Dtype = jnp.float32
    remat: bool = False  # rematerialize each down/mid/up block in the backward pass (training memory)

    def _block(self, cls):
        return nn.remat(cls) if self.remat else cls

    @nn.compact
    def __call__(
        self,
        sample: jax.Array,  # [B, H, W, in_channels]
        timesteps: jax.Array,  # [] or [B]
        encoder_hidden_states: jax.Array,  # [B, 77, cross_attention_dim]
        image_tokens: jax.Array | None = None,  # [B, N, cross_attention_dim] from ImageProjection
        ip_scale: float | jax.Array = 1.0,
    ) -> jax.Array:  # [B, H, W, out_channels]
        cfg = self.config
        x = sample.astype(self.dtype)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        context = encoder_hidden_states.astype(self.dtype)
        if image_tokens is not None:
            image_tokens = image_tokens.astype(self.dtype)
        cond = dict(context=context, image_tokens=image_tokens, ip_scale=ip_scale)

        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
        temb = timestep_embedding(timesteps, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self._time_embedding(temb.astype(self.dtype))

        x = conv(cfg.block_out_channels[0], "conv_in", dtype=self.dtype)(x)
        skips = [x]
        for i, block_type in enumerate(cfg.down_block_types):
            x, states = self._down_block(i, block_type, x, temb, cond)
            skips.extend(states)
        x = self._mid_block(x, temb, cond)
        n = cfg.layers_per_block + 1
        for i, block_type in enumerate(cfg.up_block_types):
            skips, block_skips = skips[:-n], skips[-n:]
            # Upsample to the next skip's size: diffusers' `upsample_size`, for latents of any multiple of 8.
            size = skips[-1].shape[1:3] if skips else None
            x = self._up_block(i, block_type, x, block_skips, temb, cond, size)

        x = jax.nn.silu(group_norm(cfg.norm_num_groups, cfg.norm_eps, "conv_norm_out", self.dtype)(x))
        return conv(cfg.out_channels, "conv_out", dtype=self.dtype)(x)

    def _time_embedding(self, temb):
        dim = self.config.block_out_channels[0] * 4
        return TimestepEmbedding(dim, self.config.act_fn, self.dtype, name="time_embedding")(temb)

    def _block_args(self, block_index: int, heads: int) -> dict:
        cfg = self.config
        return dict(
            groups=cfg.norm_num_groups,
            eps=cfg.norm_eps,
            heads=heads,
            transformer_layers=cfg.transformer_layers[block_index],
            use_linear_projection=cfg.use_linear_projection,
            upcast=cfg.upcast_attention,
            dtype=self.dtype,
        )

    def _down_block(self, i, block_type, x, temb, cond):
        cfg = self.config
        block = self._block(DownBlock)(
            channels=cfg.block_out_channels[i],
            num_layers=cfg.layers_per_block,
            with_attention=block_type == CROSS_ATTN_DOWN,
            downsample=i < len(cfg.block_out_channels) - 1,
            downsample_padding=cfg.downsample_padding,
            **self._block_args(i, cfg.heads[i]),
            name=f"down_blocks_{i}",
        )
        return block(x, temb, cond)

    def _mid_block(self, x, temb, cond):
        cfg = self.config
        block = self._block(MidBlock)(
            channels=cfg.block_out_channels[-1],
            output_scale_factor=cfg.mid_block_scale_factor,
            **self._block_args(-1, cfg.heads[-1]),
            name="mid_block",
        )
        return block(x, temb, cond)

    def _up_block(self, i, block_type, x, skips, temb, cond, upsample_size):
        cfg = self.config
        n = len(cfg.block_out_channels)
        block = self._block(UpBlock)(
            channels=cfg.block_out_channels[::-1][i],
            num_layers=cfg.layers_per_block + 1,
            with_attention=block_type == CROSS_ATTN_UP,
            upsample=i < n - 1,
            upsample_size=upsample_size,
            **self._block_args(n - 1 - i, cfg.heads[::-1][i]),
            name=f"up_blocks_{i}",
        )
        return block(x, skips, temb, cond)


class _Block(nn.Module):
    """Fields shared by the down, mid and up blocks."""

    channels: int
    groups: int = 32
    eps: float = 1e-5
    heads: int = 8
    transformer_layers: int = 1
    use_linear_projection: bool = False
    upcast: bool = False
    dtype: Dtype = jnp.float32

    def resnet(self, name: str, scale: float = 1.0) -> ResnetBlock2D:
        return ResnetBlock2D(self.channels, self.groups, self.eps, scale, self.dtype, name=name)

    def transformer(self, name: str) -> Transformer2DModel:
        return Transformer2DModel(
            self.heads,
            self.transformer_layers,
            self.groups,
            self.use_linear_projection,
            self.upcast,
            self.dtype,
            name=name,
        )


class DownBlock(_Block):
    """CrossAttnDownBlock2D (with_attention) or DownBlock2D."""

    num_layers: int = 2
    with_attention: bool = True
    downsample: bool = True
    downsample_padding: int = 1

    @nn.compact
    def __call__(self, x, temb, cond):
        states = []
        for j in range(self.num_layers):
            x = self.resnet(f"resnets_{j}")(x, temb)
            if self.with_attention:
                x = self.transformer(f"attentions_{j}")(x, **cond)
            states.append(x)
        if self.downsample:
            x = Downsample2D(self.channels, self.downsample_padding, self.dtype, name="downsamplers_0")(x)
            states.append(x)
        return x, states


class MidBlock(_Block):
    """UNetMidBlock2DCrossAttn."""

    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x, temb, cond):
        x = self.resnet("resnets_0", self.output_scale_factor)(x, temb)
        x = self.transformer("attentions_0")(x, **cond)
        return self.resnet("resnets_1", self.output_scale_factor)(x, temb)


class UpBlock(_Block):
    """CrossAttnUpBlock2D (with_attention) or UpBlock2D; consumes its skips last-first."""

    num_layers: int = 3
    with_attention: bool = True
    upsample: bool = True
    upsample_size: tuple[int, int] | None = None  # the next skip's (H, W); None = exactly 2x

    @nn.compact
    def __call__(self, x, skips, temb, cond):
        for j in range(self.num_layers):
            x = jnp.concatenate([x, skips[-1 - j]], axis=-1)
            x = self.resnet(f"resnets_{j}")(x, temb)
            if self.with_attention:
                x = self.transformer(f"attentions_{j}")(x, **cond)
        if self.upsample:
            x = Upsample2D(self.channels, self.dtype, name="upsamplers_0")(x, self.upsample_size)
        return x


class Downsample2D(nn.Module):
    channels: int
    padding: int | tuple[tuple[int, int], tuple[int, int]] = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return conv(self.channels, "conv", stride=2, padding=self.padding, dtype=self.dtype)(x)


class Upsample2D(nn.Module):
    channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, size=None):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour 2x, as F.interpolate
        if size is not None:  # F.interpolate(size=2n-1, "nearest") picks the same rows as 2x then crop
            x = x[:, : size[0], : size[1]]
        return conv(self.channels, "conv", dtype=self.dtype)(x)


class TimestepEmbedding(nn.Module):
    dim: int
    act_fn: str = "silu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, temb):
        h = dense(self.dim, "linear_1", dtype=self.dtype)(temb)
        return dense(self.dim, "linear_2", dtype=self.dtype)(activation(self.act_fn)(h))


class ImageProjection(nn.Module):
    """IP-Adapter `image_proj`: Linear(embed -> tokens*cross_dim), reshape, LayerNorm."""

    num_tokens: int = 4
    cross_attention_dim: int = 768
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, image_embeds: jax.Array) -> jax.Array:  # [B, E] -> [B, tokens, cross_dim]
        h = dense(self.num_tokens * self.cross_attention_dim, "proj", dtype=self.dtype)(image_embeds)
        h = h.reshape(image_embeds.shape[0], self.num_tokens, self.cross_attention_dim)
        return layer_norm(1e-5, "norm", self.dtype)(h)
