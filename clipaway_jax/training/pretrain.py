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


def contrastive_loss(vision, text, vision_name: str, text_name: str, class_weight: float = 0.0,
                     anchor_weight: float = 0.0):
    """Symmetric InfoNCE between image (with alpha when the tower has it) and text embeddings. Pairs with
    the same text count as positives of each other (a batch often holds "a red star" twice). The text
    tower trains unless the task passes it frozen (`frozen[text_name]`).

    `class_weight` adds a closed-vocabulary term, as UniCL (Yang et al. 2022) sets image-label beside
    image-text: each pair that shows one class (`batch["class_index"]`, -1 for the others) is scored
    against every class's text features (`frozen["class_features"]`, the zero-shot classifier's rows),
    so that a red star must beat the red ring, not only the captions that happen to share its batch.
    `anchor_weight` keeps the embeddings of the pairs without a class (the rest of the scene, the whole
    scene) where the starting tower put them (`frozen["anchor"]`; squared distance of unit vectors), so
    that what reads them downstream (CLIPAway's MLP) keeps its input while the classes sharpen."""
    size = vision.config.image_size

    def loss(params, frozen, batch, rng):
        pixels, alpha = alpha_clip_inputs(batch["images"], batch["alpha"], size)
        alpha = alpha if vision.config.alpha else None
        image = vision.apply({"params": params[vision_name]}, pixels, alpha)
        text_params = params[text_name] if text_name in params else frozen[text_name]["params"]
        words = text.apply({"params": text_params}, batch["text_ids"]).text_embeds
        image = _unit(image.image_embeds.astype(jnp.float32))
        words = _unit(words.astype(jnp.float32))
        scale = jnp.exp(jnp.minimum(params["logit_scale"], MAX_LOGIT_SCALE))
        logits = scale * image @ words.T
        same = jnp.all(batch["text_ids"][:, None] == batch["text_ids"][None], -1).astype(jnp.float32)
        targets = same / same.sum(-1, keepdims=True)
        total = 0.5 * (_cross_entropy(logits, targets) + _cross_entropy(logits.T, targets))
        if class_weight:
            # at CLIP's largest temperature, since the classes' features lie close (cosine ~0.99 between two
            # shapes of one colour in the mini world); the pair's own (learnt ~20) did as well in a short trial
            logits = math.exp(MAX_LOGIT_SCALE) * image @ frozen["class_features"].T
            total += class_weight * _class_term(logits, batch["class_index"])
        if anchor_weight:
            start = vision.apply(frozen["anchor"], pixels, alpha).image_embeds
            moved = jnp.sum((image - _unit(start.astype(jnp.float32))) ** 2, -1)
            total += anchor_weight * _mean_where(moved, batch["class_index"] < 0)
        return total

    return loss


def _unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _class_term(logits, index):
    """Cross-entropy over the classes, averaged over the pairs with a class (index >= 0)."""
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), jnp.maximum(index, 0)[:, None], -1)[:, 0]
    return -_mean_where(picked, index >= 0)


def _mean_where(values, where):
    """The mean of `values` [B] where `where` holds (0 where it holds nowhere)."""
    return jnp.sum(jnp.where(where, values, 0.0)) / jnp.maximum(jnp.sum(where), 1)


def _cross_entropy(logits, targets):
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, -1), -1))


def vae_loss(vae, kl_weight: float = 1e-6, l2_weight: float = 0.0, latent_noise: float = 0.0):
    """LDM's KL-autoencoder objective without the perceptual and GAN terms: L1 reconstruction of a
    posterior sample plus kl_weight x KL (both summed over elements and divided by the pixel count,
    so kl_weight means what LDM's 1e-6 means); `l2_weight` adds the squared error (what PSNR measures).
    The VAE's params are `params["vae"]`, or, where only the decoder trains, those merged over the frozen
    ones (`frozen["vae"]`). `latent_noise` > 0 adds Gaussian noise of that std, in the diffusion model's
    latent units (scaled by the VAE's scaling_factor), to the decoded sample: the decoder learns to decode
    the slightly-off latents a sampler ends on, not only the encoder's own."""
    noise_std = latent_noise / vae.config.scaling_factor if latent_noise else 0.0

    def loss(params, frozen, batch, rng):
        x = batch["images"] * 2 - 1
        weights = params["vae"] if frozen is None else {**frozen["vae"]["params"], **params["vae"]}
        posterior = vae.apply({"params": weights}, x, method="encode")
        if noise_std:
            rng, key = jax.random.split(rng)
            latents = posterior.sample(rng) + noise_std * jax.random.normal(key, posterior.mean.shape)
        else:  # (the key as the recipe's VAE stage has always drawn it)
            latents = posterior.sample(rng)
        reconstruction = vae.apply({"params": weights}, latents, method="decode")
        error = x - reconstruction.astype(jnp.float32)
        kl = 0.5 * jnp.sum(posterior.mean**2 + jnp.exp(posterior.logvar) - 1 - posterior.logvar) / x.size
        return jnp.mean(jnp.abs(error)) + l2_weight * jnp.mean(error**2) + kl_weight * kl

    return loss


def image_embeds(image_encoder, params, images):
    """The IP-Adapter image encoder's `image_embeds` of images [B, S, S, 3] in [0, 1] (CLIP preprocessing)."""
    pixels, _ = alpha_clip_inputs(images, jnp.ones(images.shape[:3]), image_encoder.config.image_size)
    return image_encoder.apply(params, pixels).image_embeds
