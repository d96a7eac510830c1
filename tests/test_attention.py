"""The blockwise CPU attention equals softmax attention (and torch's SDPA); the dispatcher uses it for long
self-attention only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures import assert_close

from clipaway_jax.models import attention as attn


@pytest.mark.parametrize("lq, lk", [(1024, 1024), (960, 960), (1000, 77), (64, 4)])
def test_blockwise_equals_torch_sdpa(lq, lk):
    rng = np.random.RandomState(lq)
    q = rng.randn(2, lq, 4, 40).astype(np.float32)
    k, v = (rng.randn(2, lk, 4, 40).astype(np.float32) for _ in range(2))
    to_torch = lambda x: torch.from_numpy(x).transpose(1, 2)
    expected = torch.nn.functional.scaled_dot_product_attention(to_torch(q), to_torch(k), to_torch(v))
    out = jax.jit(attn.blockwise_attention)(q, k, v)
    assert_close(out, expected.transpose(1, 2).numpy(), f"blockwise {lq}x{lk}")


def test_blockwise_in_bfloat16_stays_close():
    rng = np.random.RandomState(0)
    q, k, v = (jnp.asarray(rng.randn(1, 512, 2, 32), jnp.bfloat16) for _ in range(3))
    exact = jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
    out = attn.blockwise_attention(q, k, v)
    assert out.dtype == jnp.bfloat16 and float(jnp.abs(out.astype(jnp.float32) - exact).max()) < 2e-2


def test_dispatcher_goes_blockwise_only_for_long_unmasked_attention():
    long = jnp.zeros((1, 1024, 2, 8))
    short = jnp.zeros((1, 64, 2, 8))
    uses_map = lambda *a, **k: "scan" in str(jax.make_jaxpr(lambda *x: attn.attention(*x, **k))(*a))
    assert uses_map(long, long, long)
    assert not uses_map(short, short, short)
    assert not uses_map(long, long, long, is_causal=True)


def test_block_size_divides_the_length():
    assert attn._block_size(4096, 256) == 256
    assert attn._block_size(960, 256) == 240
    assert attn._block_size(1009, 256) == 1009  # a prime: one block
