"""FID InceptionV3: the network of pytorch-fid / torch-fidelity (TF's 2015 Inception graph ported),
returning the 2048-d pool features that FID and KID are computed on.

It differs from torchvision's Inception3 where the TF graph did: average pools exclude the padding
(`count_include_pad=False`) in the A, C and first E blocks, and the last E block max-pools its pool
branch. BatchNorm is inference-only (eps 1e-3) with its statistics stored as params: the network is
frozen. Module names follow the torch state dict (`Mixed_5b/branch1x1/conv`), so the converter is a
table of renames.

Inputs: images [B, H, W, 3] in [0, 1]. `resize="tf1"` (default) is torch-fidelity's (and so
torchmetrics'): the 8-bit values bilinearly resized as TensorFlow 1.x did (no half-pixel centres),
then (x - 128) / 128; `resize="pytorch-fid"` is torch's bilinear (half-pixel centres) on [0, 1], then
2x - 1. Both resize to 299x299.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipaway_jax.models.layers import Dtype

INPUT_SIZE = 299
RESIZES = ("tf1", "pytorch-fid")


class BasicConv2d(nn.Module):
    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        pads = tuple((p, p) for p in self.padding)
        x = nn.Conv(self.features, self.kernel, (self.stride,) * 2, pads, use_bias=False, dtype=self.dtype,
                    name="conv")(x)  # fmt: skip
        return jax.nn.relu(FrozenBatchNorm(name="bn")(x))


class FrozenBatchNorm(nn.Module):
    """Inference BatchNorm: (x - mean) / sqrt(var + eps) * scale + bias, as torch's eval mode."""

    eps: float = 1e-3

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale, bias = self.param("scale", nn.initializers.ones, (c,)), self.param("bias", nn.initializers.zeros, (c,))
        mean, var = self.param("mean", nn.initializers.zeros, (c,)), self.param("var", nn.initializers.ones, (c,))
        return ((x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(x.dtype)


def avg_pool_3x3(x):
    """3x3, stride 1, padding 1, dividing by the number of real (unpadded) pixels."""
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pads)
    count = jax.lax.reduce_window(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, jax.lax.add, window, strides, pads)
    return total / count


def max_pool(x, size=3, stride=2, padding=0):
    pads = ((padding, padding),) * 2
    return nn.max_pool(x, (size, size), (stride, stride), pads)


class InceptionA(nn.Module):
    pool_features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, dtype=self.dtype)
        b1 = c(64, name="branch1x1")(x)
        b5 = c(64, (5, 5), padding=(2, 2), name="branch5x5_2")(c(48, name="branch5x5_1")(x))
        b3 = c(64, name="branch3x3dbl_1")(x)
        b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = c(self.pool_features, name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, dtype=self.dtype)
        b3 = c(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(c(64, name="branch3x3dbl_1")(x))
        bd = c(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c, c7 = functools.partial(BasicConv2d, dtype=self.dtype), self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = c(192, name="branch1x1")(x)
        b7 = c(c7, name="branch7x7_1")(x)
        b7 = c(192, **col, name="branch7x7_3")(c(c7, **row, name="branch7x7_2")(b7))
        bd = c(c7, name="branch7x7dbl_1")(x)
        for i, (features, shape) in enumerate(((c7, col), (c7, row), (c7, col), (192, row)), start=2):
            bd = c(features, **shape, name=f"branch7x7dbl_{i}")(bd)
        bp = c(192, name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, dtype=self.dtype)
        b3 = c(320, (3, 3), stride=2, name="branch3x3_2")(c(192, name="branch3x3_1")(x))
        b7 = c(192, name="branch7x7x3_1")(x)
        b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = c(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    max_pool_branch: bool = False  # the last block (FIDInceptionE_2) max-pools; the first averages
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, dtype=self.dtype)
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = c(320, name="branch1x1")(x)
        b3 = c(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([c(384, **row, name="branch3x3_2a")(b3), c(384, **col, name="branch3x3_2b")(b3)], -1)
        bd = c(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(c(448, name="branch3x3dbl_1")(x))
        bd = jnp.concatenate([c(384, **row, name="branch3x3dbl_3a")(bd), c(384, **col, name="branch3x3dbl_3b")(bd)],
                             -1)  # fmt: skip
        pooled = max_pool(x, 3, 1, 1) if self.max_pool_branch else avg_pool_3x3(x)
        bp = c(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """images [B, H, W, 3] in [0, 1] -> pool features [B, 2048]."""

    resize: str = "tf1"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        x = preprocess(images, self.resize).astype(self.dtype)
        c = functools.partial(BasicConv2d, dtype=self.dtype)
        x = c(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = c(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = max_pool(c(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x))
        x = c(80, name="Conv2d_3b_1x1")(x)
        x = max_pool(c(192, (3, 3), name="Conv2d_4a_3x3")(x))
        for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool, self.dtype, name=name)(x)
        x = InceptionB(self.dtype, name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, self.dtype, name=name)(x)
        x = InceptionD(self.dtype, name="Mixed_7a")(x)
        x = InceptionE(False, self.dtype, name="Mixed_7b")(x)
        x = InceptionE(True, self.dtype, name="Mixed_7c")(x)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def preprocess(images: jax.Array, resize: str = "tf1") -> jax.Array:
    """[B, H, W, 3] in [0, 1] -> the network's [B, 299, 299, 3] input."""
    if resize == "tf1":
        levels = jnp.round(jnp.clip(images.astype(jnp.float32), 0.0, 1.0) * 255.0)  # the uint8 images it takes
        return (_bilinear(levels, INPUT_SIZE, half_pixel=False) - 128) / 128
    if resize == "pytorch-fid":
        return 2 * _bilinear(images.astype(jnp.float32), INPUT_SIZE, half_pixel=True) - 1
    raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")


def _bilinear(x: jax.Array, size: int, half_pixel: bool) -> jax.Array:
    """Separable bilinear resize to size x size with host-computed taps (align_corners=False): along the
    width, then the height, as torch-fidelity's exact TF1 port interpolates."""
    for axis in (2, 1):
        lo, hi, frac = _taps(x.shape[axis], size, half_pixel)
        a, b = jnp.take(x, lo, axis=axis), jnp.take(x, hi, axis=axis)
        shape = [1] * x.ndim
        shape[axis] = size
        x = a + (b - a) * frac.reshape(shape)  # TF's `top + (bottom - top) * lerp`, in float32
    return x


@functools.lru_cache(maxsize=16)
def _taps(in_size: int, out_size: int, half_pixel: bool):
    scale = np.float32(in_size / out_size)
    if half_pixel:  # torch: src = (dst + 0.5) * scale - 0.5, clamped at 0
        src = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    else:  # TensorFlow 1.x: src = dst * scale
        src = np.arange(out_size, dtype=np.float32) * scale
    lo = src.astype(np.int32)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo.astype(np.float32)).astype(np.float32)
