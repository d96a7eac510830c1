"""CLIPAway object removal: preprocessed arrays -> decoded pixels as ONE jit-compiled program.

    images, masks ──► focused embeddings (AlphaCLIP, alpha = mask | 1 - mask, one batched call)
                      └► MLP ─► projection block ─► IP-Adapter image tokens   (positive branch)
    "" / negative text ─► CLIP text encoder                                    (text tokens)
    masked image ─► VAE encode ─┐
    noise ─► lax.scan over the sampler's timesteps: 9-channel UNet on [neg; pos] (2B), CFG ─► VAE decode

A second base, Blended Latent Diffusion (`RemovalOptions(base="blended")`, Avrahami et al., the loop
of their scripts/text_editing_SD2.py), takes a text-to-image (4-channel) UNet with the same image tokens:

    image ─► VAE posterior mean ─► source latents z0
    noise ─► lax.scan over DDIM's timesteps[int(S * blend_start):]: UNet, CFG, DDIM step, then
             x = x * mask + add_noise(z0, fresh noise, t) * (1 - mask)      ─► VAE decode

Per-image PRNG keys come from (seed, image name or index), so a result never depends on the batch
it was computed in.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipaway_jax import hostmem, xla
from clipaway_jax.checkpoint import Checkpoint, load_checkpoint
from clipaway_jax.models import focused_embeddings, projection_block
from clipaway_jax.models.dcgd import KINDS, unet_kind
from clipaway_jax.pipelines.images import binarize, dilate, feather, seamless, smooth_fill
from clipaway_jax.schedulers import make_sampler
from clipaway_jax.schedulers.base import add_noise, at

DEFAULT_NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"  # IP-Adapter's default
INFERENCE_NETWORKS = ("unet", "vae", "text_encoder", "alpha_clip", "mlp", "image_proj")


@dataclasses.dataclass(frozen=True)
class RemovalOptions:
    """Everything that changes the compiled program (static). Scalars that do not are call arguments."""

    steps: int = 50
    scheduler: str = "pndm"
    uncond: str = "mlp"  # "mlp": image_proj(MLP(zeros_768)) as CLIPAway; "zeros": image_proj(zeros) as IP-Adapter
    dilate_kernel: int = 5
    dilate_iterations: int = 5  # 0 disables dilation
    paste_back: int = 0  # feather radius in pixels; 0 = off (the original does not paste back)
    seamless: bool = False  # paste-back: first shift the fill to meet the input's colours at its edge
    posterior: str = "sample"  # VAE latents of the masked image: "sample" (diffusers) or "mode"
    base: str = "inpaint"  # "inpaint": a 9/12-channel inpainting UNet; "blended": Blended Latent Diffusion
    blend_start: float = 0.25  # blended: the fraction of the timesteps skipped (the reference's default)
    blend_noise: str = "current"  # blended: re-noise the source to the current step's t (the reference) or
    #                               to the previous one (the level the DDIM step has just produced)
    strength: float = 1.0  # inpaint: the share of the schedule run. 1: from pure noise (the original); below,
    #                        from the input with its hole filled smoothly from the context, noised to the first
    #                        step's level (SDEdit's start; diffusers' `strength`, the hole pre-filled)

    def __post_init__(self):
        if self.uncond not in ("mlp", "zeros"):
            raise ValueError(f"uncond must be 'mlp' or 'zeros', got {self.uncond!r}")
        if self.posterior not in ("sample", "mode"):
            raise ValueError(f"posterior must be 'sample' or 'mode', got {self.posterior!r}")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}")
        if self.base == "blended" and self.scheduler != "ddim":
            raise ValueError(f"the blended base samples with DDIM, as Blended Latent Diffusion; got {self.scheduler!r}")
        if not 0 <= self.blend_start < 1:
            raise ValueError(f"blend_start must be in [0, 1), got {self.blend_start}")
        if self.blend_noise not in ("current", "previous"):
            raise ValueError(f"blend_noise must be 'current' or 'previous', got {self.blend_noise!r}")
        if self.seamless and self.paste_back <= 0:
            raise ValueError("seamless shifts the fill for pasting back: it needs paste_back > 0")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.strength < 1 and (self.base != "inpaint" or self.scheduler != "ddim"):
            raise ValueError(f"strength < 1 runs the inpainting base with DDIM; got {self.base!r}, {self.scheduler!r}")
        if int(self.steps * self.strength) == 0:
            raise ValueError(f"strength {self.strength} runs no step of {self.steps}")

    @property
    def first_step(self) -> int:
        """The index of the first timestep run: int(S * blend_start) for the blended base, else
        S - int(S * strength) (diffusers' `get_timesteps`)."""
        if self.base == "blended":
            return int(self.steps * self.blend_start)
        return self.steps - int(self.steps * self.strength)


BASES = ("inpaint", "blended")
UNET_KINDS = {"inpaint": ("inpaint", "dcgd"), "blended": ("text-to-image",)}  # the UNets each base runs
# Blended Latent Diffusion's DDIMScheduler(beta_start, beta_end, "scaled_linear", clip_sample=False,
# set_alpha_to_one=False): the sampling settings come from its script, the noise schedule from the model.
BLENDED_DDIM = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=0, timestep_spacing="leading")
NOISE_SCHEDULE = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")


def blended_scheduler_config(config: dict) -> dict:
    """The checkpoint's noise schedule (what its UNet was trained with) with the reference's DDIM settings."""
    return {**{k: config[k] for k in NOISE_SCHEDULE if k in config}, **BLENDED_DDIM}


def image_keys(seed: int, names: Sequence[str | int]) -> jax.Array:
    """One key per image from (seed, name): the same image gets the same noise in any batch."""
    base = jax.random.key(seed)
    ids = [n if isinstance(n, int) else zlib.crc32(str(n).encode()) for n in names]
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(ids, jnp.uint32))


@dataclasses.dataclass(frozen=True, eq=False)
class Networks:
    """The Flax modules (configuration only; params travel separately)."""

    unet: Any
    vae: Any
    text_encoder: Any
    alpha_clip: Any
    mlp: Any
    image_proj: Any


TOKEN_SOURCES = ("projected", "focused", "background")  # CLIPAway's embedding; MLP(e_f); MLP(e_b)


def image_tokens(nets: Networks, params, images, masks, options: RemovalOptions, source=0):
    """CLIPAway's conditional and unconditional IP-Adapter tokens, [B, 4, D] each. `source` indexes
    TOKEN_SOURCES (a traced value: the diagnostics reuse the same compiled program)."""
    e_f, e_b = focused_embeddings(nets.alpha_clip, params["alpha_clip"], images, masks)
    mlp = lambda x: nets.mlp.apply(params["mlp"], x)
    f, b = jnp.split(mlp(jnp.concatenate([e_f, e_b])), 2)
    embeds = jnp.stack([projection_block(b, f), f, b])[source]
    project = lambda e: nets.image_proj.apply(params["image_proj"], e)
    if options.uncond == "mlp":
        uncond = mlp(jnp.zeros((1, nets.mlp.config.alpha_clip_embed_dim)))
    else:
        uncond = jnp.zeros((1, embeds.shape[-1]))  # zeros in the IP-Adapter image-embedding space
    cond = project(embeds)
    return cond, jnp.broadcast_to(project(uncond), cond.shape)


def _latent_noise(keys, shape, dtype):
    return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


def initial_latents(keys, shape) -> jax.Array:
    """The sampler's starting noise [B, *shape] (before init_noise_sigma), from each image's own key."""
    noise_keys = jax.vmap(jax.random.split)(keys)[:, 0]
    return _latent_noise(noise_keys, shape, jnp.float32)


BLEND_STREAM = 2  # the per-image key's sub-stream for the blended base's per-step noise
FILL_STREAM = 3  # ... for the VAE posterior sample of the pre-filled input (strength < 1)


def blending_noise(keys, index, shape) -> jax.Array:
    """The fresh noise the blended base adds to the source latents at step `index`, [B, *shape]: from each
    image's own key, so an image's result does not depend on its batch."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, BLEND_STREAM), index),
                                                shape, jnp.float32))(keys)  # fmt: skip


def removal_program(nets: Networks, sampler, options: RemovalOptions, batch_sharding=None):
    """The pure function that `jax.jit` compiles: (params, batch, scalars) -> pixels in [0, 1].

    `batch_sharding(ndim)` -> a sharding for batch-major arrays: the latents carried through the
    sampling loop are constrained to it, so the batch stays split across devices at every step."""
    constrain = (
        (lambda x: jax.lax.with_sharding_constraint(x, batch_sharding(x.ndim))) if batch_sharding else (lambda x: x)
    )
    unet, vae = nets.unet, nets.vae
    sf, down = vae.config.scaling_factor, vae.config.scale_factor
    timesteps = jnp.asarray(sampler.timesteps)

    def encode(params, pixels, keys):
        """Scaled VAE latents of pixels in [-1, 1]: posterior sample (per-image keys) or mean."""
        posterior = vae.apply(params["vae"], pixels, method="encode")
        if options.posterior == "mode":
            return posterior.mean * sf
        eps = _latent_noise(keys, posterior.mean.shape[1:], posterior.mean.dtype)
        return (posterior.mean + jnp.exp(0.5 * posterior.logvar) * eps) * sf

    def condition_channels(params, images, masks, keys):
        """What the UNet sees besides x_t: 9-ch mask ⊕ z(x0∘(1-o)); 12-ch (DCGD) z(x0∘o) ⊕ z(x0∘(1-o))."""
        keep = (masks < 0.5)[..., None]
        x0 = images * 2 - 1
        if unet_kind(unet.config) == "dcgd":
            object_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
            both = encode(params, jnp.concatenate([x0 * ~keep, x0 * keep]), jnp.concatenate([object_keys, keys]))
            return jnp.concatenate(jnp.split(both, 2), axis=-1)
        mask_latents = masks[:, ::down, ::down, None]  # nearest resize to the latent grid, as F.interpolate
        return jnp.concatenate([mask_latents, encode(params, x0 * keep, keys)], axis=-1)

    def blended(params, images, masks, keys, x, guided_eps):
        """Blended Latent Diffusion's loop: after each DDIM step, outside the mask, the source latents
        re-noised to the step's level replace the sample."""
        source = vae.apply(params["vae"], images * 2 - 1, method="encode").mean * sf
        mask = masks[:, down // 2 :: down, down // 2 :: down, None]  # Pillow's NEAREST to the latent grid
        levels = sampler.alpha if options.blend_noise == "current" else sampler.alpha_prev

        def step(carry, i):
            state, x = carry
            model_in = sampler.scale_model_input(state, jnp.repeat(x, 2, axis=0))
            state, x = sampler.step(state, guided_eps(model_in, timesteps[i]), x)
            noised = add_noise(at(levels, i, x), source, blending_noise(keys, i, x.shape[1:]))
            return (state, constrain(x * mask + noised * (1 - mask))), None

        first = options.first_step
        (_, x), _ = jax.lax.scan(step, (sampler.init_state(x, first), x), jnp.arange(first, len(timesteps)))
        return x

    def prefilled(params, images, masks, keys, noise, first):
        """The start for strength < 1: the input with its hole filled from the context, encoded and noised
        to timestep `first`'s level with the sampler's own starting noise."""
        fill_keys = jax.vmap(lambda k: jax.random.fold_in(k, FILL_STREAM))(keys)
        z = encode(params, smooth_fill(images * 2 - 1, masks), fill_keys)
        return constrain(add_noise(at(sampler.alpha, first, z), z, noise))

    def run(params, images, masks, text_ids, keys, guidance_scale, ip_scale, diagnostic=(0, False), latents=None):
        # images [B, H, W, 3] in [0, 1]; masks [B, H, W]; text_ids [B, 2, 77] (negative, positive)
        # diagnostic: (token source index, inpaint the whole image) for --show-embeddings
        b, h, w, _ = images.shape
        masks = binarize(masks)
        if options.dilate_iterations:
            masks = dilate(masks, options.dilate_kernel, options.dilate_iterations)
        source, inpaint_full = diagnostic
        cond_tokens, uncond_tokens = image_tokens(nets, params, images, masks, options, source)

        # The UNet batch interleaves the branches per image, [img0 neg, img0 pos, img1 neg, ...], so a
        # batch split over devices keeps both branches of an image on its device (no resharding).
        ids = text_ids.reshape(2 * b, text_ids.shape[-1])
        context = nets.text_encoder.apply(params["text_encoder"], ids).last_hidden_state
        tokens = jnp.stack([uncond_tokens, cond_tokens], axis=1).reshape(2 * b, *cond_tokens.shape[1:])

        def guided_eps(model_in, t):
            eps = unet.apply(params["unet"], model_in, t, context, tokens, ip_scale)
            eps = eps.astype(jnp.float32).reshape(b, 2, *eps.shape[1:])
            return eps[:, 0] + guidance_scale * (eps[:, 1] - eps[:, 0])

        vae_keys = jax.vmap(jax.random.split)(keys)[:, 1]
        masks = jnp.where(inpaint_full, jnp.ones_like(masks), masks)
        if latents is None:
            latents = initial_latents(keys, (h // down, w // down, unet.config.out_channels))
        x = constrain(latents * sampler.init_noise_sigma)

        if options.base == "blended":
            x = blended(params, images, masks, keys, x, guided_eps)
        else:
            extra = jnp.repeat(condition_channels(params, images, masks, vae_keys), 2, axis=0)
            first = options.first_step
            if first:
                x = prefilled(params, images, masks, keys, x, first)

            def step(carry, t):
                state, x = carry
                model_in = sampler.scale_model_input(state, jnp.repeat(x, 2, axis=0))
                state, x = sampler.step(state, guided_eps(jnp.concatenate([model_in, extra], -1), t), x)
                return (state, constrain(x)), None

            (_, x), _ = jax.lax.scan(step, (sampler.init_state(x, first), x), timesteps[first:])
        pixels = vae.apply(params["vae"], x / sf, method="decode").astype(jnp.float32)
        pixels = jnp.clip(pixels / 2 + 0.5, 0.0, 1.0)
        if options.paste_back:
            if options.seamless:
                pixels = seamless(images, masks, pixels)
            soft = feather(masks, options.paste_back)[..., None]
            pixels = images * (1 - soft) + pixels * soft
        return pixels

    return run


BASE_HINT = {
    "inpaint": "Load 'unet' (or 'unet_dcgd12') for the inpainting base.",
    "blended": "Load 'unet_t2i' (convert a text-to-image SD-1.5 folder with --sd-base) for the blended base.",
}


class CLIPAwayPipeline:
    """`pipe = CLIPAwayPipeline.from_checkpoint(path)`; `pipe.remove(images, masks, seed=0)`."""

    def __init__(self, checkpoint: Checkpoint, dtype=jnp.float32, unet: str = "unet", mesh=None):
        if unet not in checkpoint.params:
            raise ValueError(f"{checkpoint.path}: no UNet {unet!r}; it has {sorted(checkpoint.params)}")
        names = [unet if name == "unet" else name for name in INFERENCE_NETWORKS]
        self.checkpoint, self.mesh = checkpoint, mesh
        self.nets = Networks(*(checkpoint.module(name, dtype) for name in names))
        self.params = {name: {"params": checkpoint.params[source]} for name, source in zip(INFERENCE_NETWORKS, names)}
        try:
            unet_kind(self.nets.unet.config)
        except ValueError as err:
            raise ValueError(f"{unet}: {err} (text-to-image is the blended base's)") from None
        self.unet_name = unet
        self.scheduler_config = checkpoint.manifest.get("scheduler", {})
        self._tokenizer = None
        self._programs: dict[RemovalOptions, Any] = {}
        self._compiled: dict[tuple, Any] = {}

    @classmethod
    def from_checkpoint(cls, path, dtype=None, mesh=None, unet: str = "unet", extra=(), rules=None) -> CLIPAwayPipeline:
        """`unet`: the UNet network to use ("unet", or "unet_dcgd12"); `extra`: more networks to load
        (e.g. "clip_text" for region descriptions); `mesh`: restore params sharded by `rules`
        (replicated by default) and keep the batch split over the mesh inside the program."""
        from clipaway_jax.sharding import REPLICATED

        compute = jnp.dtype(dtype) if dtype is not None else jnp.float32
        names = [unet if name == "unet" else name for name in INFERENCE_NETWORKS] + list(extra)
        checkpoint = load_checkpoint(path, mesh=mesh, dtype=dtype, networks=names, rules=rules or REPLICATED)
        return cls(checkpoint, compute, unet, mesh)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from clipaway_jax.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.checkpoint.tokenizer_path)
        return self._tokenizer

    def text_ids(self, prompts: Sequence[str], negatives: Sequence[str]) -> np.ndarray:
        """[B, 2, 77]: (negative, positive) token ids per image."""
        from clipaway_jax.tokenizer import tokenize

        return np.stack([tokenize(self.tokenizer, list(negatives)), tokenize(self.tokenizer, list(prompts))], axis=1)

    def program(self, options: RemovalOptions):
        """The jit-compiled removal function for these options (compiled once per input shape)."""
        if options not in self._programs:
            from clipaway_jax.sharding import batch_sharding

            self.check_base(options.base)
            config = self.scheduler_config
            config = blended_scheduler_config(config) if options.base == "blended" else config
            sampler = make_sampler(options.scheduler, config, options.steps)
            split = (lambda ndim: batch_sharding(self.mesh, ndim)) if self.mesh is not None else None
            self._programs[options] = xla.jit(removal_program(self.nets, sampler, options, split))
        return self._programs[options]

    def check_base(self, base: str) -> None:
        config = self.nets.unet.config
        kind = unet_kind(config)
        if kind not in UNET_KINDS[base]:
            needs = " or ".join(f"{KINDS[k](config.out_channels)}" for k in UNET_KINDS[base])
            article = "a text-to-image" if kind == "text-to-image" else "an inpainting"
            raise ValueError(f"{self.checkpoint.path}: base {base!r} needs a UNet of {needs} input channels; "
                             f"{self.unet_name!r} is {article} UNet ({config.in_channels}). " + BASE_HINT[base])

    def compiled(self, options: RemovalOptions, args: tuple):
        """The program compiled ahead of time for these batch shapes (once per shape; the compiler's freed
        memory goes back to the OS before the first run, which lowers the peak by ~0.5 GB at full size)."""
        from clipaway_jax.pipelines import executables

        batch = jax.tree_util.tree_leaves(args[1:])  # the params (args[0]) are fixed for this pipeline
        key = (options, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in batch))
        if key not in self._compiled:
            networks = {name: entry.get("config") for name, entry in self.checkpoint.manifest["networks"].items()}
            parts = (repr(options), repr(self.mesh), networks, self.scheduler_config, str(self.nets.unet.dtype))
            on_disk = executables.signature(*parts, args=args)
            lower_fn = lambda: self.program(options).lower(*args)
            self._compiled[key] = executables.load_or_compile(on_disk, lower_fn)
            hostmem.release_freed()
        return self._compiled[key]

    def remove(
        self,
        images: np.ndarray,  # [B, H, W, 3] in [0, 1], H and W multiples of the VAE factor (8)
        masks: np.ndarray,  # [B, H, W] in [0, 1]
        *,
        seed: int = 0,
        names: Sequence[str | int] | None = None,
        guidance_scale: float = 7.5,
        ip_scale: float = 1.0,
        prompt: str | Sequence[str] = "",
        negative_prompt: str | Sequence[str] = DEFAULT_NEGATIVE_PROMPT,
        latents: np.ndarray | None = None,
        options: RemovalOptions | None = None,
        token_source: str = "projected",
        inpaint_full: bool = False,
    ) -> np.ndarray:
        """`token_source` / `inpaint_full`: the original's diagnostics (generate the whole image from MLP(e_f),
        MLP(e_b) or the projection); they reuse the compiled program."""
        images, masks = np.asarray(images, np.float32), np.asarray(masks, np.float32)
        factor = self.nets.vae.config.scale_factor
        if images.ndim != 4 or masks.shape != images.shape[:3] or images.shape[1] % factor or images.shape[2] % factor:
            raise ValueError(f"images {images.shape} / masks {masks.shape}: need [B, H, W, 3] and [B, H, W] with "
                             f"H and W multiples of the VAE factor {factor}")  # fmt: skip
        b = images.shape[0]
        names = list(range(b)) if names is None else list(names)
        per_image = lambda text: [text] * b if isinstance(text, str) else list(text)
        ids = self.text_ids(per_image(prompt), per_image(negative_prompt))
        diagnostic = (jnp.int32(TOKEN_SOURCES.index(token_source)), jnp.bool_(inpaint_full))
        scalars = (jnp.float32(guidance_scale), jnp.float32(ip_scale), diagnostic)
        args = (self.params, images, masks, ids, image_keys(seed, names), *scalars)
        args = args if latents is None else (*args, latents)
        return np.asarray(self.compiled(options or RemovalOptions(), args)(*args))
