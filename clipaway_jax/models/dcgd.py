"""DCGD's 12-channel UNet input (eq. 5): x_t ⊕ z(x0∘o) ⊕ z(x0∘(1-o)), and its initialization from the
9-channel SD-inpainting UNet (x_t ⊕ mask ⊕ z(x0∘(1-o))) or, on request, a 4-channel text-to-image one.

conv_in's input channels are re-laid: latent 0:4 -> 0:4, masked-image latent 5:9 -> 8:12, the new
object-latent block 4:8 starts at zero and the mask channel is dropped. Before fine-tuning the
12-channel prediction therefore equals the 9-channel one with its mask channel set to zero. From a
text-to-image UNet only the latent block is copied; both region latents start at zero.

The counts are SD's, with 4 latent channels; a VAE of L latent channels (the mini world may use 8) makes
them L (text-to-image), 2L + 1 (inpainting) and 3L (DCGD): `unet_kind` reads which from the config.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from clipaway_jax.models.unet import UNetConfig


def dcgd_input(noisy: jnp.ndarray, object_latents: jnp.ndarray, background_latents: jnp.ndarray) -> jnp.ndarray:
    """[B, h, w, 12] = x_t ⊕ z(x0∘o) ⊕ z(x0∘(1-o))."""
    return jnp.concatenate([noisy, object_latents, background_latents], axis=-1)


KINDS = {"text-to-image": lambda latent: latent, "inpaint": lambda latent: 2 * latent + 1,
         "dcgd": lambda latent: 3 * latent}  # input channels of each UNet kind, for `latent` channels  # fmt: skip


def unet_kind(config: UNetConfig) -> str:
    """text-to-image (x_t), inpaint (x_t ⊕ mask ⊕ z(x0∘(1-o))) or dcgd (x_t ⊕ z(x0∘o) ⊕ z(x0∘(1-o))), from the
    input channels and the latent channels (out_channels): 4 / 9 / 12 for SD's 4."""
    for kind, channels in KINDS.items():
        if config.in_channels == channels(config.out_channels):
            return kind
    expected = ", ".join(f"{channels(config.out_channels)} ({kind})" for kind, channels in KINDS.items())
    raise ValueError(f"a UNet of {config.out_channels} latent channels takes {expected} input channels, not "
                     f"{config.in_channels}")  # fmt: skip


def dcgd12_from_inpaint(params: dict, config: UNetConfig) -> tuple[dict, UNetConfig]:
    """A 12-channel UNet (params, config) from a 9-channel inpainting UNet (or a 4-channel text-to-image
    one); everything but conv_in's input channels is shared (3L from 2L + 1 or L for L latent channels)."""
    kind, latent = unet_kind(config), config.out_channels
    if kind == "dcgd":
        raise ValueError(f"need an inpainting ({2 * latent + 1}-channel) or text-to-image ({latent}-channel) UNet, "
                         f"got DCGD's {config.in_channels}")  # fmt: skip
    kernel = np.asarray(params["conv_in"]["kernel"])  # [3, 3, 2L + 1 or L, C]
    new = np.zeros((*kernel.shape[:2], 3 * latent, kernel.shape[3]), kernel.dtype)
    new[:, :, :latent] = kernel[:, :, :latent]
    if kind == "inpaint":
        new[:, :, 2 * latent :] = kernel[:, :, latent + 1 :]
    params = {**params, "conv_in": {**params["conv_in"], "kernel": new}}
    return params, config.replace(in_channels=3 * latent)
