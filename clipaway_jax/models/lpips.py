"""LPIPS v0.1 with the AlexNet trunk (the `lpips` package's default, as DCGD's table uses).

    d(x, y) = sum_l mean_hw( w_l · (n(f_l(x)) - n(f_l(y)))^2 )

f_l: the five ReLU outputs of torchvision's AlexNet `features` (conv1..conv5), n: unit length over
channels (eps 1e-10 added to the norm), w_l: the package's learned 1x1 `lin` layers (no bias).
Inputs are images in [0, 1] (`normalize=True` in the package: 2x - 1, then its ScalingLayer).
Module names follow the two source files: `features_0` ... (torchvision's alexnet-owt file) and
`lin0` ... (the package's weights/v0.1/alex.pth).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipaway_jax.models.layers import Dtype

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# (torchvision features index, out channels, kernel, stride, padding, max-pool before it)
ALEXNET = ((0, 64, 11, 4, 2, False), (3, 192, 5, 1, 2, True), (6, 384, 3, 1, 1, True), (8, 256, 3, 1, 1, False),
           (10, 256, 3, 1, 1, False))  # fmt: skip


class LPIPS(nn.Module):
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:  # [B, H, W, 3] each, in [0, 1] -> [B]
        both = jnp.concatenate([x, y]).astype(jnp.float32)
        h = ((2 * both - 1) - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
        total = 0.0
        for layer, (index, features, kernel, stride, padding, pool) in enumerate(ALEXNET):
            if pool:
                h = nn.max_pool(h, (3, 3), (2, 2))
            conv = nn.Conv(features, (kernel, kernel), (stride, stride), ((padding, padding),) * 2, dtype=self.dtype,
                           name=f"features_{index}")  # fmt: skip
            h = jax.nn.relu(conv(h))
            a, b = jnp.split(_unit(h.astype(jnp.float32)), 2)
            weighted = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{layer}")((a - b) ** 2)
            total = total + jnp.mean(weighted, axis=(1, 2, 3))
        return total


def _unit(h: jax.Array, eps: float = 1e-10) -> jax.Array:
    return h / (jnp.sqrt(jnp.sum(h**2, axis=-1, keepdims=True)) + eps)
