"""The one attention function every network calls, so a faster kernel can replace it in one place."""

from __future__ import annotations

import jax


def attention(
    query: jax.Array,  # [B, Lq, H, D]
    key: jax.Array,  # [B, Lk, H, D]
    value: jax.Array,  # [B, Lk, H, D]
    *,
    mask: jax.Array | None = None,  # bool, broadcastable to [B, H, Lq, Lk]; True = attend
    is_causal: bool = False,
) -> jax.Array:  # [B, Lq, H, D]
    """Scaled dot-product attention with softmax scale 1/sqrt(D)."""
    return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal)


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[B, L, H*D] -> [B, L, H, D]"""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def merge_heads(x: jax.Array) -> jax.Array:
    """[B, L, H, D] -> [B, L, H*D]"""
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])
