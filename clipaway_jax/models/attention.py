"""The one attention function every network calls, so a faster kernel replaces it in one place.

On CPU, long self-attention (the UNet's 64x64 = 4096-token levels) goes through `blockwise_attention`:
a map over heads and query blocks whose [B, block, Lk] scores stay cache-sized, with plain GEMMs.
Measured at 4096 tokens, 8 heads x 40, batch 2 (bench notes in bench/RESULTS.md) it runs ~6x faster
than `jax.nn.dot_product_attention`'s XLA path, on par with torch's SDPA. Elsewhere (GPU/TPU, short
or masked attention) `jax.nn.dot_product_attention` picks the backend's kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCKWISE_MIN_SCORES = 1 << 20  # Lq * Lk from which the CPU path goes blockwise (1024 x 1024)
QUERY_BLOCK = 256


def attention(
    query: jax.Array,  # [B, Lq, H, D]
    key: jax.Array,  # [B, Lk, H, D]
    value: jax.Array,  # [B, Lk, H, D]
    *,
    mask: jax.Array | None = None,  # bool, broadcastable to [B, H, Lq, Lk]; True = attend
    is_causal: bool = False,
) -> jax.Array:  # [B, Lq, H, D]
    """Scaled dot-product attention with softmax scale 1/sqrt(D)."""
    long = query.shape[1] * key.shape[1] >= BLOCKWISE_MIN_SCORES
    if mask is None and not is_causal and long and jax.default_backend() == "cpu":
        return blockwise_attention(query, key, value)
    return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal)


def _block_size(length: int, target: int) -> int:
    """The largest divisor of `length` not above `target` (the whole length if none is reasonable)."""
    for size in range(min(target, length), 0, -1):
        if length % size == 0:
            return size if size >= 16 else length
    return length


def blockwise_attention(query, key, value, block: int = QUERY_BLOCK) -> jax.Array:
    """Exact softmax attention, one head and one query block at a time (float32 inside).

    The batch stays a GEMM batch dimension, so a batch split over devices needs no communication."""
    b, lq, h, d = query.shape
    block = _block_size(lq, block)
    scale = d**-0.5
    heads_first = lambda x: jnp.moveaxis(x.astype(jnp.float32), 2, 0)  # [H, B, L, D]
    q, k, v = heads_first(query * scale), heads_first(key), heads_first(value)

    def per_head(args):
        qh, kh, vh = args

        def per_block(qb):  # [B, block, D]
            scores = jnp.einsum("bqd,bkd->bqk", qb, kh)
            weights = jnp.exp(scores - scores.max(-1, keepdims=True))
            return jnp.einsum("bqk,bkd->bqd", weights, vh) / weights.sum(-1, keepdims=True)

        blocks = jnp.moveaxis(qh.reshape(b, lq // block, block, d), 1, 0)
        return jnp.moveaxis(jax.lax.map(per_block, blocks), 0, 1).reshape(b, lq, d)

    out = jax.lax.map(per_head, (q, k, v))  # [H, B, Lq, D]
    return jnp.moveaxis(out, 0, 2).astype(query.dtype)


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[B, L, H*D] -> [B, L, H, D]"""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def merge_heads(x: jax.Array) -> jax.Array:
    """[B, L, H, D] -> [B, L, H*D]"""
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])
