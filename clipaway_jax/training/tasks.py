"""CLIPAway's MLP (AlphaCLIP(image, alpha = 1) -> ViT-H image_embeds, MSE) and the inpainting-UNet
objective: DCGD's fine-tune (9 or 12 input channels, random masks, noise MSE), and with `image_proj`
SD-inpainting + IP-Adapter training (decoupled cross-attention on the image encoder's embedding).

Every loss takes `params` as {network name: params} (the trained ones) and `frozen` the same way."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from clipaway_jax import xla
from clipaway_jax.atomic import write_atomic
from clipaway_jax.models.dcgd import unet_kind
from clipaway_jax.models.vae import DiagonalGaussian
from clipaway_jax.preprocess import alpha_clip_inputs
from clipaway_jax.schedulers.base import SchedulerConfig, add_noise, alphas_cumprod
from clipaway_jax.training.data import decode_image, random_mask
from clipaway_jax.training.pretrain import image_embeds

# --- the MLP --------------------------------------------------------------------------------------


def mlp_loss(mlp):
    def loss(params, frozen, batch, rng):
        prediction = mlp.apply({"params": params["mlp"]}, batch["alpha_embeds"])
        return jnp.mean((prediction - batch["target_embeds"]) ** 2)

    return loss


def frozen_embeddings(alpha_clip, image_encoder, frozen, images):
    """AlphaCLIP with an all-ones alpha, and the ViT-H `image_embeds`, of images [B, S, S, 3] in [0, 1]."""
    ones = jnp.ones(images.shape[:3])
    pixels, alpha = alpha_clip_inputs(images, ones, alpha_clip.config.image_size)
    alpha_embeds = alpha_clip.apply(frozen["alpha_clip"], pixels, alpha).image_embeds
    vit_pixels, _ = alpha_clip_inputs(images, ones, image_encoder.config.image_size, pixels_too=True)
    target = image_encoder.apply(frozen["image_encoder"], vit_pixels).image_embeds
    return jax.lax.stop_gradient(alpha_embeds), jax.lax.stop_gradient(target)


def mlp_loss_from_images(mlp, alpha_clip, image_encoder):
    """Recomputes the frozen encoders every step (what --cache-embeddings avoids)."""

    def loss(params, frozen, batch, rng):
        alpha_embeds, target = frozen_embeddings(alpha_clip, image_encoder, frozen, batch["images"])
        prediction = mlp.apply({"params": params["mlp"]}, alpha_embeds)
        return jnp.mean((prediction - target) ** 2)

    return loss


def cache_embeddings(source, alpha_clip, image_encoder, frozen, out: Path, image_size: int,
                     per_device: int = 8) -> Path:  # fmt: skip
    """The MLP's inputs and targets of every image, encoded once (`write_cache`)."""
    load = lambda indices: {"images": np.stack([decode_image(source[int(i)]["image"], image_size) for i in indices])}

    def encode(frozen, batch):
        alpha_embeds, target = frozen_embeddings(alpha_clip, image_encoder, frozen, batch["images"])
        return {"alpha_embeds": alpha_embeds, "target_embeds": target}

    return write_cache(len(source), load, encode, frozen, out, per_device, meta={"image_size": image_size})


def write_cache(count: int, load, encode, frozen, out: Path, per_device: int = 8, keep=(), meta=None) -> Path:
    """What frozen networks make of every example, computed once: `encode(frozen, load(indices))` ->
    {name: [B, ...]}, plus the loaded fields named in `keep`, as float32 (or as loaded) .npy shards and a
    manifest. Each process takes a contiguous slice of the examples and splits its batches over its own
    devices (no cross-host traffic); process 0 writes the manifest once every shard is on disk."""
    from jax.experimental import multihost_utils
    from tqdm import tqdm

    from clipaway_jax.sharding import batch_sharding, make_mesh, replicated

    out.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(devices=jax.local_devices())
    batch = per_device * mesh.size  # one fixed shape: the last batch is padded, so one compile
    encode = xla.jit(encode)
    frozen = jax.device_put(frozen, replicated(mesh))
    rank, processes = jax.process_index(), jax.process_count()
    lo, hi = count * rank // processes, count * (rank + 1) // processes
    parts: dict[str, list] = {}
    for start in tqdm(range(lo, hi, batch), desc=f"caching {out.name}", unit="batch", disable=rank != 0):
        indices = np.arange(start, min(hi, start + batch))
        loaded = load(indices)
        padded = {k: np.concatenate([v, np.repeat(v[-1:], batch - len(v), 0)]) for k, v in loaded.items()}
        placed = {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in padded.items()}
        encoded = {k: np.asarray(v)[: len(indices)] for k, v in encode(frozen, placed).items()}
        for name, value in {**{k: loaded[k] for k in keep}, **encoded}.items():
            parts.setdefault(name, []).append(value)
    for name, values in parts.items():
        array = np.concatenate(values)
        write_atomic(out / f"{name}.{rank:05d}-of-{processes:05d}.npy", lambda f, a=array: np.save(f, a))
    if processes > 1:
        multihost_utils.sync_global_devices(f"clipaway-jax cache {out.name} written")
    if rank == 0:
        files = {name: [f"{name}.{r:05d}-of-{processes:05d}.npy" for r in range(processes)] for name in parts}
        manifest = {"count": count, **(meta or {}), "files": files}
        write_atomic(out / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=2).encode()))
    return out


def load_cache(folder: Path) -> dict[str, np.ndarray]:
    manifest = json.loads((folder / "manifest.json").read_text())
    arrays = {name: np.concatenate([np.load(folder / f) for f in files]) for name, files in manifest["files"].items()}
    for name, array in arrays.items():
        if len(array) != manifest["count"]:
            raise ValueError(f"{folder}: {name} holds {len(array)} examples, the manifest says {manifest['count']}")
    return arrays


# --- the DCGD UNet fine-tune ----------------------------------------------------------------------


def frozen_inputs(unet, vae, image_encoder=None):
    """`inputs(frozen, images, masks)`: what the frozen networks give the UNet loss for a batch, the same
    at every step: the VAE posteriors (mean, logvar: [B, n, h, w, L]) of the n regions the UNet kind reads
    (x0; x0 without the object; DCGD: the object alone), in ONE encoder call, and the image encoder's
    embedding. `cache_latents` computes them once per example (`write_cache`)."""
    kind = unet_kind(unet.config)

    def inputs(frozen, images, masks):
        x0, keep = images * 2 - 1, masks[..., None] < 0.5
        regions = [x0] if kind == "text-to-image" else [x0, x0 * keep]
        if kind == "dcgd":
            regions.append(x0 * ~keep)  # the object alone: DCGD's z(x0∘o)
        n, b = len(regions), x0.shape[0]
        posterior = vae.apply(frozen["vae"], jnp.concatenate(regions), method="encode")
        per_example = lambda a: jnp.swapaxes(a.reshape(n, b, *a.shape[1:]), 0, 1)
        out = {"posterior_mean": per_example(posterior.mean), "posterior_logvar": per_example(posterior.logvar)}
        if image_encoder is not None:
            out["image_embeds"] = image_embeds(image_encoder, frozen["image_encoder"], images)
        return jax.lax.stop_gradient(out)

    return inputs


def unet_loss(unet, vae, text_encoder, scheduler_config: dict, name: str = "unet", image_encoder=None,
              image_proj=None, snr_gamma: float = 0.0, mask_weight: float = 1.0, timestep_bias=None):  # fmt: skip
    """Noise MSE (DCGD eq. 7) for a 9- or 12-channel inpainting UNet (or a 4-channel text-to-image one),
    conditioned on per-example text;
    with `image_proj`, also on IP-Adapter tokens of the whole image's embedding (zeroed where the batch's
    `keep_image` is 0: IP-Adapter's condition dropout, for classifier-free guidance).
    `snr_gamma` > 0 weights each example by min-SNR-gamma (Hang et al. 2023, as diffusers' `snr_gamma`).
    `mask_weight` != 1 weights each latent pixel of a 9- or 12-channel UNet by 1 + (mask_weight - 1) x the
    share of it the mask covers, normalised per example (`masked_mean`): the hole weighs more than the
    context the condition already shows.
    `timestep_bias` (`timestep_weights()`'s keywords, `--config.timestep_bias`): t is drawn from those weights
    over the schedule's timesteps instead of uniformly.
    A batch holds `images`, or the cached `frozen_inputs` of them (`posterior_mean`, ...): the same loss."""
    cfg = SchedulerConfig.from_dict(scheduler_config, {})
    alphas = jnp.asarray(alphas_cumprod(cfg), jnp.float32)
    sf = vae.config.scaling_factor
    down = vae.config.scale_factor
    kind = unet_kind(unet.config)
    weights = timestep_weights(cfg.num_train_timesteps, **(timestep_bias or {}))
    encode = frozen_inputs(unet, vae, image_encoder if image_proj is not None else None)

    def loss(params, frozen, batch, rng):
        masks = batch["masks"][..., None]
        k_vae, k_t, k_noise = jax.random.split(rng, 3)
        cached = batch if "posterior_mean" in batch else encode(frozen, batch["images"], batch["masks"])
        mean, logvar = (jnp.swapaxes(cached[k], 0, 1) for k in ("posterior_mean", "posterior_logvar"))  # [n, B, ...]
        samples = DiagonalGaussian(mean.reshape(-1, *mean.shape[2:]), logvar.reshape(-1, *mean.shape[2:])).sample(k_vae)
        latents, *parts = samples.reshape(mean.shape) * sf
        if kind == "dcgd":
            condition = jnp.concatenate([parts[1], parts[0]], -1)
        elif kind == "inpaint":
            condition = jnp.concatenate([masks[:, ::down, ::down], parts[0]], -1)
        else:  # text-to-image: the noisy latents alone
            condition = latents[..., :0]
        b = masks.shape[0]
        if weights is None:
            t = jax.random.randint(k_t, (b,), 0, cfg.num_train_timesteps)
        else:
            t = jax.random.choice(k_t, cfg.num_train_timesteps, (b,), p=jnp.asarray(weights, jnp.float32))
        noise = jax.random.normal(k_noise, latents.shape)
        a = alphas[t][:, None, None, None]
        noisy = add_noise(a, latents, noise)
        target = noise if cfg.prediction_type == "epsilon" else jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * latents
        context = jax.lax.stop_gradient(text_encoder.apply(frozen["text_encoder"], batch["text_ids"]).last_hidden_state)
        tokens = None
        if image_proj is not None:
            embeds = cached["image_embeds"] * batch["keep_image"][:, None]
            tokens = image_proj.apply({"params": params["image_proj"]}, embeds)
        prediction = unet.apply({"params": params[name]}, jnp.concatenate([noisy, condition], -1), t, context, tokens)
        error = (prediction.astype(jnp.float32) - target) ** 2
        if mask_weight != 1.0 and kind != "text-to-image":
            error = masked_mean(error, masks, mask_weight)
        else:
            error = jnp.mean(error, axis=(1, 2, 3))
        if snr_gamma > 0:
            error = error * min_snr_weights(alphas[t], snr_gamma, cfg.prediction_type)
        return jnp.mean(error)

    return loss


def masked_mean(error: jax.Array, masks: jax.Array, mask_weight: float) -> jax.Array:
    """Per example, the mean of `error` [B, h, w, C] weighted 1 outside the mask and `mask_weight` inside;
    `masks` [B, H, W, 1] at pixel resolution are averaged down to the latent grid (a pixel of it half
    covered weighs half way)."""
    b, h, w, _ = error.shape
    share = masks.reshape(b, h, masks.shape[1] // h, w, masks.shape[2] // w).mean(axis=(2, 4))
    weights = 1 + (mask_weight - 1) * share[..., None]
    return jnp.sum(error * weights, axis=(1, 2, 3)) / (jnp.sum(weights, axis=(1, 2, 3)) * error.shape[-1])


def timestep_weights(num_timesteps: int, strategy: str = "none", multiplier: float = 1.0, portion: float = 0.25,
                     begin: int = 0, end: int = 1000) -> np.ndarray | None:
    """The training timesteps' sampling weights of diffusers' SDXL script (`--timestep_bias_strategy`,
    `_multiplier`, `_portion`, `_begin`, `_end`): "later" multiplies the last `portion` of the timesteps (the
    noisiest) by `multiplier`, "earlier" the first, "range" [begin, end); normalised. "none": None (uniform)."""
    if strategy == "none":
        return None
    if multiplier <= 0:
        raise ValueError(f"timestep_bias.multiplier must be > 0, got {multiplier}")
    count = int(portion * num_timesteps)
    if strategy == "later":
        biased = slice(num_timesteps - count, None)
    elif strategy == "earlier":
        biased = slice(0, count)
    elif strategy == "range":
        if not 0 <= begin < end <= num_timesteps:
            raise ValueError(f"timestep_bias range [{begin}, {end}) is not inside [0, {num_timesteps})")
        biased = slice(begin, end)
    else:
        raise ValueError(f"timestep_bias.strategy must be none, later, earlier or range, got {strategy!r}")
    weights = np.ones(num_timesteps)
    weights[biased] *= multiplier
    return weights / weights.sum()


def min_snr_weights(alpha_bar: jax.Array, gamma: float, prediction_type: str = "epsilon") -> jax.Array:
    """Min-SNR-gamma loss weights per timestep, as diffusers' train_text_to_image.py: min(SNR, gamma) / SNR
    for epsilon targets, min(SNR, gamma) / (SNR + 1) for v-prediction; SNR = alpha_bar / (1 - alpha_bar)."""
    snr = alpha_bar / (1 - alpha_bar)
    return jnp.minimum(snr, gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)


def unet_batch_loader(source, image_size: int, text_ids: np.ndarray, seed: int, area=(0.01, 0.4)):
    """Per-example image, a seeded random mask (by example index), and the prompt's token ids."""

    def load(indices: np.ndarray) -> dict:
        images = np.stack([decode_image(source[int(i)]["image"], image_size) for i in indices])
        masks = np.stack([random_mask(np.random.default_rng([seed, int(i)]), image_size, area) for i in indices])
        ids = np.repeat(text_ids[None], len(indices), axis=0)
        return {"images": images, "masks": masks, "text_ids": ids}

    return load


def text_to_image_from_inpaint(params: dict, vae, vae_params, image_size: int) -> dict:
    """A 4-channel UNet's conv_in from a 9-channel inpainting UNet's: the mask channel at 1 and the masked
    image's latent at z(gray) (the whole image masked, as the pipeline feeds it then) are constants, folded
    into the bias; the other modules stay the inpainting UNet's. Exact away from the border (the constant
    channels' zero padding is not), which a short fine-tune of conv_in corrects."""
    gray = jnp.zeros((1, image_size, image_size, 3))
    encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode").mean)  # eager flax is slow
    latent = np.asarray(encode(vae_params, gray) * vae.config.scaling_factor).mean(axis=(0, 1, 2))
    return fold_constant_inputs(params["conv_in"], np.concatenate([[1.0], latent]), len(latent))


def fold_constant_inputs(conv: dict, constants: np.ndarray, latent: int = 4) -> dict:
    """A 3x3 conv whose input channels `latent`: are the constants `constants`: the conv of channels
    :latent alone."""
    kernel, bias = np.asarray(conv["kernel"]), np.asarray(conv["bias"])
    if kernel.shape[2] != latent + len(constants):
        raise ValueError(f"conv_in takes {kernel.shape[2]} channels; folding needs {latent} + {len(constants)}")
    folded = bias + np.einsum("hwcd,c->d", kernel[:, :, latent:], constants)
    return {"kernel": kernel[:, :, :latent], "bias": folded.astype(bias.dtype)}
