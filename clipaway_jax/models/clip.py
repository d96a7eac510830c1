"""CLIP towers in Flax: the text transformer (SD's text encoder, and CLIP text features) and one
configurable vision transformer that serves AlphaCLIP (alpha patch embedding), OpenAI CLIP and
OpenCLIP ViT-H (the IP-Adapter image encoder).

Module names follow transformers' `CLIPTextModel` / `CLIPVisionModelWithProjection`; AlphaCLIP's
OpenAI-style names are mapped by its own converter table.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipaway_jax.models.attention import attention, merge_heads, split_heads
from clipaway_jax.models.config import ConfigBase
from clipaway_jax.models.layers import Dtype, activation, conv, dense, layer_norm


class _TransformersConfig(ConfigBase):
    """transformers configs carry many bookkeeping keys (architectures, dtype, ids...): ignore them."""

    @classmethod
    def from_dict(cls, data, *, source="config"):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig(_TransformersConfig):
    """transformers `CLIPTextConfig` keys; defaults are OpenAI CLIP ViT-L/14 (SD-1.5's text encoder)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(_TransformersConfig):
    """transformers `CLIPVisionConfig` keys plus `alpha` (AlphaCLIP's alpha-channel patch embedding)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    projection_dim: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    alpha: bool = False

    ALPHA_CLIP_L14: ClassVar[dict[str, Any]] = dict(alpha=True)
    VIT_H14: ClassVar[dict[str, Any]] = dict(
        hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32, hidden_act="gelu"
    )

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


class CLIPAttention(nn.Module):
    num_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None, is_causal=False):
        width = x.shape[-1]
        proj = lambda name: split_heads(
            dense(width, name, axes=("embed", "heads"), dtype=self.dtype)(x), self.num_heads
        )
        out = attention(proj("q_proj"), proj("k_proj"), proj("v_proj"), mask=mask, is_causal=is_causal)
        return dense(width, "out_proj", axes=("heads", "embed"), dtype=self.dtype)(merge_heads(out))


class CLIPMLP(nn.Module):
    intermediate_size: int
    act: str
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = activation(self.act)(dense(self.intermediate_size, "fc1", dtype=self.dtype)(x))
        return dense(x.shape[-1], "fc2", axes=("mlp", "embed"), dtype=self.dtype)(h)


class CLIPEncoderLayer(nn.Module):
    num_heads: int
    intermediate_size: int
    act: str
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None, is_causal=False):
        h = layer_norm(self.eps, "layer_norm1", self.dtype)(x)
        x = x + CLIPAttention(self.num_heads, self.dtype, name="self_attn")(h, mask, is_causal)
        h = layer_norm(self.eps, "layer_norm2", self.dtype)(x)
        return x + CLIPMLP(self.intermediate_size, self.act, self.dtype, name="mlp")(h)


class CLIPEncoder(nn.Module):
    num_layers: int
    num_heads: int
    intermediate_size: int
    act: str
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None, is_causal=False):
        for i in range(self.num_layers):
            layer = CLIPEncoderLayer(
                self.num_heads, self.intermediate_size, self.act, self.eps, self.dtype, name=f"layers_{i}"
            )
            x = layer(x, mask, is_causal)
        return x


def _encoder(cfg: CLIPTextConfig | CLIPVisionConfig, dtype: Dtype) -> CLIPEncoder:
    return CLIPEncoder(
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.intermediate_size,
        cfg.hidden_act,
        cfg.layer_norm_eps,
        dtype,
        name="encoder",
    )


class TextOutput(NamedTuple):
    last_hidden_state: jax.Array  # [B, L, width]
    pooler_output: jax.Array  # [B, width], the EOS token's state
    text_embeds: jax.Array | None  # [B, projection_dim] when with_projection


class CLIPTextModel(nn.Module):
    """`CLIPTextModel` (and `CLIPTextModelWithProjection` when `with_projection`)."""

    config: CLIPTextConfig
    with_projection: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> TextOutput:
        cfg = self.config
        length = input_ids.shape[1]
        tokens = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=self.dtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
            name="token_embedding",
        )(input_ids)
        positions = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.01), (None, "embed")),
            (cfg.max_position_embeddings, cfg.hidden_size),
        )
        x = tokens + positions[:length].astype(self.dtype)
        mask = None if attention_mask is None else attention_mask[:, None, None, :].astype(bool)
        x = _encoder(cfg, self.dtype)(x, mask, is_causal=True)
        x = layer_norm(cfg.layer_norm_eps, "final_layer_norm", self.dtype)(x)
        pooled = x[jnp.arange(x.shape[0]), eos_positions(input_ids, cfg.eos_token_id)]
        embeds = None
        if self.with_projection:
            embeds = dense(cfg.projection_dim, "text_projection", use_bias=False, dtype=self.dtype)(pooled)
        return TextOutput(x, pooled, embeds)


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """Where transformers pools: the highest id for legacy configs (eos 2), else the first EOS."""
    if eos_token_id == 2:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax(input_ids == eos_token_id, axis=-1)


class VisionOutput(NamedTuple):
    last_hidden_state: jax.Array  # [B, tokens, width], before post_layernorm (as transformers)
    pooler_output: jax.Array  # [B, width], post_layernorm(class token)
    image_embeds: jax.Array  # [B, projection_dim]


class CLIPVisionTransformer(nn.Module):
    """CLIP ViT; with `config.alpha`, AlphaCLIP: patch embedding `conv1(rgb) + conv1_alpha(alpha)`.

    Inputs are normalized NHWC: pixels with CLIP mean/std, alpha with mean 0.5, std 0.26.
    """

    config: CLIPVisionConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array, alpha: jax.Array | None = None) -> VisionOutput:
        cfg = self.config
        patch = lambda name: conv(
            cfg.hidden_size,
            name,
            kernel_size=cfg.patch_size,
            stride=cfg.patch_size,
            padding=0,
            use_bias=False,
            in_axis=None,
            dtype=self.dtype,
        )
        x = patch("patch_embedding")(pixel_values.astype(self.dtype))
        if cfg.alpha:
            if alpha is None:
                raise ValueError("AlphaCLIP needs an alpha mask (use all ones for the whole image)")
            x = x + patch("patch_embedding_alpha")(alpha.astype(self.dtype))
        b = x.shape[0]
        x = x.reshape(b, -1, cfg.hidden_size)
        init = nn.initializers.normal(cfg.hidden_size**-0.5)
        cls = self.param("class_embedding", nn.with_logical_partitioning(init, ("embed",)), (cfg.hidden_size,))
        positions = self.param(
            "position_embedding",
            nn.with_logical_partitioning(init, (None, "embed")),
            (cfg.num_positions, cfg.hidden_size),
        )
        if x.shape[1] + 1 != cfg.num_positions:
            raise ValueError(f"image of {pixel_values.shape[1:3]} px does not give {cfg.num_positions - 1} patches")
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, cfg.hidden_size)), x], axis=1)
        x = layer_norm(cfg.layer_norm_eps, "pre_layernorm", self.dtype)(x + positions.astype(self.dtype))
        x = _encoder(cfg, self.dtype)(x)
        pooled = layer_norm(cfg.layer_norm_eps, "post_layernorm", self.dtype)(x[:, 0])
        embeds = dense(cfg.projection_dim, "visual_projection", use_bias=False, dtype=self.dtype)(pooled)
        return VisionOutput(x, pooled, embeds)


def zero_shot_logits(
    image_embeds: jax.Array, text_embeds: jax.Array, logit_scale: jax.Array | float
) -> jax.Array:  # [B_img, B_text]
    """CLIP's scores: exp(logit_scale) * cos(image, text), as `CLIPModel.logits_per_image`."""
    image = image_embeds / jnp.linalg.norm(image_embeds, axis=-1, keepdims=True)
    text = text_embeds / jnp.linalg.norm(text_embeds, axis=-1, keepdims=True)
    return jnp.exp(logit_scale) * image @ text.T
