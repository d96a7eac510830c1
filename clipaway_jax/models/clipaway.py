"""CLIPAway's own parts: the MLP into the IP-Adapter embedding space, the projection block and the
focused embeddings (AlphaCLIP with the object mask and with its complement, in one batched call)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipaway_jax.models.clip import CLIPVisionTransformer
from clipaway_jax.models.config import ConfigBase
from clipaway_jax.models.layers import Dtype, dense, gelu_exact, layer_norm
from clipaway_jax.preprocess import alpha_clip_inputs


@dataclasses.dataclass(frozen=True)
class MLPConfig(ConfigBase):
    """Keys of CLIPAway's `config/inference_config.yaml`."""

    number_of_hidden_layers: int = 6
    alpha_clip_embed_dim: int = 768
    ip_adapter_embed_dim: int = 1024

    def widths(self) -> list[tuple[int, int]]:
        """(in, out) of each hidden Linear: the first half keeps the AlphaCLIP width, then IP-Adapter's."""
        n, a, p = self.number_of_hidden_layers, self.alpha_clip_embed_dim, self.ip_adapter_embed_dim
        return [(a, a) if i < n // 2 else (a, p) if i == n // 2 else (p, p) for i in range(n)]


class CLIPAwayMLP(nn.Module):
    """`nn.Sequential` of n x [Linear, LayerNorm, GELU] + Linear; submodule `layers_k` is torch index k."""

    config: MLPConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, alpha_clip_embed_dim] -> [B, ip_adapter_embed_dim]
        x = x.astype(self.dtype)
        for i, (_, width) in enumerate(self.config.widths()):
            x = dense(width, f"layers_{3 * i}", dtype=self.dtype)(x)
            x = gelu_exact(layer_norm(1e-5, f"layers_{3 * i + 1}", self.dtype)(x))
        final = 3 * self.config.number_of_hidden_layers
        return dense(self.config.ip_adapter_embed_dim, f"layers_{final}", dtype=self.dtype)(x)


@jax.jit
def projection_block(background: jax.Array, focused: jax.Array) -> jax.Array:
    """`b - ((b . f) / ||f||^2) f` per row: the part of b orthogonal to f. Rows with f = 0 keep b."""
    f_sq = jnp.sum(focused * focused, axis=-1, keepdims=True)
    safe = jnp.where(f_sq > 0, f_sq, 1.0)  # keeps gradients finite too, not only the values
    coef = jnp.where(f_sq > 0, jnp.sum(background * focused, axis=-1, keepdims=True) / safe, 0.0)
    return background - coef * focused


def focused_embeddings(
    alpha_clip: CLIPVisionTransformer,
    params,
    images: jax.Array,  # [B, H, W, 3] in [0, 1]
    masks: jax.Array,  # [B, H, W] in [0, 1], 1 = object
) -> tuple[jax.Array, jax.Array]:  # e_f, e_b: [B, 768] each, not normalized
    """AlphaCLIP with alpha = mask (focused on the object) and alpha = 1 - mask (on the background)."""
    size = alpha_clip.config.image_size
    pixels, alpha = alpha_clip_inputs(images, masks, size)
    _, inverted = alpha_clip_inputs(images, 1.0 - masks, size, pixels_too=False)
    both = alpha_clip.apply(params, jnp.concatenate([pixels, pixels]), jnp.concatenate([alpha, inverted])).image_embeds
    return jnp.split(both, 2)
