"""Trainings from scratch, for a world with no published weights (the mini world): a CLIP pair
(contrastive, AlphaCLIP's alpha input optional), the VAE (KL autoencoder), and the inpainting UNet with
IP-Adapter (SD-inpainting's objective, conditioned on the image encoder's embedding as IP-Adapter was).

Every loss takes `params` as {network name: params} and the frozen networks the same way.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from clipaway_jax.preprocess import alpha_clip_inputs

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps its learned temperature here
INIT_LOGIT_SCALE = math.log(1 / 0.07)


def contrastive_loss(vision, text, vision_name: str, text_name: str):
    """Symmetric InfoNCE between image (with alpha when the tower has it) and text embeddings. Pairs with
    the same text count as positives of each other (a batch often holds "a red star" twice)."""
    size = vision.config.image_size

    def loss(params, frozen, batch, rng):
        pixels, alpha = alpha_clip_inputs(batch["images"], batch["alpha"], size)
        image = vision.apply({"params": params[vision_name]}, pixels, alpha if vision.config.alpha else None)
        words = text.apply({"params": params[text_name]}, batch["text_ids"]).text_embeds
        image = image.image_embeds / jnp.linalg.norm(image.image_embeds, axis=-1, keepdims=True)
        words = words / jnp.linalg.norm(words, axis=-1, keepdims=True)
        scale = jnp.exp(jnp.minimum(params["logit_scale"], MAX_LOGIT_SCALE))
        logits = scale * image.astype(jnp.float32) @ words.astype(jnp.float32).T
        same = jnp.all(batch["text_ids"][:, None] == batch["text_ids"][None], -1).astype(jnp.float32)
        targets = same / same.sum(-1, keepdims=True)
        return 0.5 * (_cross_entropy(logits, targets) + _cross_entropy(logits.T, targets))

    return loss


def _cross_entropy(logits, targets):
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, -1), -1))


def vae_loss(vae, kl_weight: float = 1e-6, l2_weight: float = 0.0):
    """LDM's KL-autoencoder objective without the perceptual and GAN terms: L1 reconstruction of a
    posterior sample plus kl_weight x KL (both summed over elements and divided by the pixel count,
    so kl_weight means what LDM's 1e-6 means); `l2_weight` adds the squared error (what PSNR measures)."""

    def loss(params, frozen, batch, rng):
        x = batch["images"] * 2 - 1
        posterior = vae.apply({"params": params["vae"]}, x, method="encode")
        reconstruction = vae.apply({"params": params["vae"]}, posterior.sample(rng), method="decode")
        error = x - reconstruction.astype(jnp.float32)
        kl = 0.5 * jnp.sum(posterior.mean**2 + jnp.exp(posterior.logvar) - 1 - posterior.logvar) / x.size
        return jnp.mean(jnp.abs(error)) + l2_weight * jnp.mean(error**2) + kl_weight * kl

    return loss


def image_embeds(image_encoder, params, images):
    """The IP-Adapter image encoder's `image_embeds` of images [B, S, S, 3] in [0, 1] (CLIP preprocessing)."""
    pixels, _ = alpha_clip_inputs(images, jnp.ones(images.shape[:3]), image_encoder.config.image_size)
    return image_encoder.apply(params, pixels).image_embeds
