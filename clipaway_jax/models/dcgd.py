"""DCGD's 12-channel UNet input (eq. 5): x_t ⊕ z(x0∘o) ⊕ z(x0∘(1-o)), and its initialization from the
9-channel SD-inpainting UNet (x_t ⊕ mask ⊕ z(x0∘(1-o))) or, on request, a 4-channel text-to-image one.

conv_in's input channels are re-laid: latent 0:4 -> 0:4, masked-image latent 5:9 -> 8:12, the new
object-latent block 4:8 starts at zero and the mask channel is dropped. Before fine-tuning the
12-channel prediction therefore equals the 9-channel one with its mask channel set to zero. From a
text-to-image UNet only the latent block is copied; both region latents start at zero.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from clipaway_jax.models.unet import UNetConfig


def dcgd_input(noisy: jnp.ndarray, object_latents: jnp.ndarray, background_latents: jnp.ndarray) -> jnp.ndarray:
    """[B, h, w, 12] = x_t ⊕ z(x0∘o) ⊕ z(x0∘(1-o))."""
    return jnp.concatenate([noisy, object_latents, background_latents], axis=-1)


def dcgd12_from_inpaint(params: dict, config: UNetConfig) -> tuple[dict, UNetConfig]:
    """A 12-channel UNet (params, config) from a 9-channel inpainting UNet (or a 4-channel text-to-image
    one); everything but conv_in's input channels is shared."""
    if config.in_channels not in (9, 4):
        raise ValueError(f"need a 9-channel inpainting (or 4-channel) UNet, got in_channels={config.in_channels}")
    kernel = np.asarray(params["conv_in"]["kernel"])  # [3, 3, 9 or 4, C]
    new = np.zeros((*kernel.shape[:2], 12, kernel.shape[3]), kernel.dtype)
    new[:, :, 0:4] = kernel[:, :, 0:4]
    if config.in_channels == 9:
        new[:, :, 8:12] = kernel[:, :, 5:9]
    params = {**params, "conv_in": {**params["conv_in"], "kernel": new}}
    return params, config.replace(in_channels=12)
