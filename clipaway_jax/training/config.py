"""A training run is an `ml_collections.ConfigDict`, as in flax's examples and big_vision: a file in
`train/configs/` defines `get_config()`, starting from `base_config()` (every field `clipaway-jax train`
reads, with its plain default) and setting what its run needs; any field is overridden on the command
line (`--config.steps=100`). The resolved config goes into the workdir and the exported manifest."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ml_collections import ConfigDict, FrozenConfigDict, config_dict

TASKS = ("mlp", "unet", "alpha-clip", "image-encoder", "vae", "inpaint", "t2i")


def base_config() -> ConfigDict:
    c = ConfigDict()
    c.task = config_dict.placeholder(str)  # one of TASKS
    c.checkpoint = config_dict.placeholder(str)  # the checkpoint with the frozen networks (or the `init` section)

    # data: an image folder (written once as an array_record tfds set) or an existing tfds dataset
    c.images = config_dict.placeholder(str)
    c.tfds = config_dict.placeholder(str)  # NAME:SPLIT
    c.data_dir = config_dict.placeholder(str)  # tfds data_dir (default WORKDIR/data)
    c.cache_embeddings = False  # mlp: encode the frozen towers once, then train on vectors
    c.cache_latents = False  # inpaint, t2i, unet with captions: the VAE posteriors and image embeddings once
    c.val_fraction = 0.0  # hold out this fraction of the data for a validation loss

    # optimization
    c.steps = 1000
    c.batch_size = 8  # global, over every device and host
    c.learning_rate = 1e-4
    c.weight_decay = 0.0
    c.optimizer = "adam"  # adam: torch's Adam (weight decay as L2 in the gradient); adamw: decoupled
    c.schedule = "constant"  # or warmup_cosine
    c.warmup_steps = 0
    c.clip_grad_norm = 0.0  # 0 = off
    c.ema_decay = 0.0  # > 0: keep an EMA of the params (diffusers' EMAModel decay rule) and export it
    c.seed = 0
    c.precision = "auto"  # activations: auto = bfloat16 on GPU/TPU, float32 on CPU; params stay float32

    # running
    c.save_every = 1000
    c.keep = 3  # checkpoints kept, plus the best by validation loss
    c.eval_every = 1000
    c.log_every = 50
    c.fsdp = 1  # shard params and optimizer state over this many devices

    # the contrastive tasks (alpha-clip)
    c.background_p = 0.0  # share of pairs: a fresh background texture under the object's mask <-> its name
    c.shape_p = 0.0  # share of the object's pairs captioned with its shape alone ("a star")
    # relative weights of the pairs: the object under its mask, the rest, the whole scene, the object's box crop
    c.pair_kinds = (1.0, 1.0, 1.0, 1.0)
    c.vision_only = False  # continue the checkpoint's trained vision tower; its text tower stays frozen
    c.class_weight = 0.0  # with vision_only: weight of the pairs scored against every class's zero-shot features
    c.anchor_weight = 0.0  # with class_weight: keep the pairs without a class at the starting tower's embedding

    # the VAE task
    c.vae_l2_weight = 0.0  # weight of the squared error beside LDM's L1 (PSNR measures the squared error)
    c.decoder_only = False  # vae: continue the checkpoint's trained VAE with its encoder (the latent space) frozen
    c.latent_noise = 0.0  # decoder_only: std of Gaussian noise on the decoded latents, in the UNet's latent units

    # the UNet tasks
    c.unet_variant = "inpaint"  # or dcgd12 (unet task)
    c.size = 512  # training resolution of image-folder data (mlp, unet), a multiple of 64
    c.captions = False  # unet: a mini_scenes-like set: its object and random masks, scene captions as text
    c.prompt = ""  # unet: the conditioning text otherwise (e.g. a T_info description)
    c.mask_area = (0.01, 0.4)  # unet: random mask area range
    c.remat = False  # rematerialize UNet blocks (less memory, more compute)
    c.mask_weight = 1.0  # inpaint, unet: loss weight of the masked region against 1 outside it (1 = off)
    c.snr_gamma = 0.0  # unet, inpaint, t2i: min-SNR-gamma loss weighting (diffusers' --snr_gamma; 5 is usual); 0 = off
    # unet, inpaint, t2i: draw t with more weight on a part of the schedule (diffusers' SDXL --timestep_bias_*)
    c.timestep_bias = ConfigDict({"strategy": "none", "multiplier": 1.0, "portion": 0.25, "begin": 0, "end": 1000})
    # inpaint, t2i and unet with captions (mini_scenes data): clipaway_jax/mini/batches.py InpaintRecipe
    c.inpaint_masks = ConfigDict({"whole": 0.0, "object": 0.5, "elsewhere": 0.0, "random_area": (0.02, 0.4),
                                 "wrap": True, "spare_objects": 0.0, "overlap": 0.0})
    c.caption_p = 0.3  # share of examples conditioned on the scene caption (else "")
    c.keep_image_p = 0.85  # share keeping the image embedding (else zeros, for classifier-free guidance)
    c.empty_p = 0.0  # share of examples replaced by an empty scene (a fresh texture of its background kind)
    return c


def inpaint_recipe(c: ConfigDict):
    """The mini loaders' InpaintRecipe from a config's fields."""
    from clipaway_jax.mini.batches import InpaintRecipe, MaskRecipe

    m = c.inpaint_masks
    masks = MaskRecipe(m.whole, m.object, m.elsewhere, tuple(m.random_area), m.wrap, m.spare_objects, m.overlap)
    return InpaintRecipe(masks, c.caption_p, c.keep_image_p, c.empty_p)


def from_scratch(c: ConfigDict) -> ConfigDict:
    """The optimizer of the networks trained from nothing (the mini world): AdamW, weight decay 1e-4,
    100 warm-up steps then cosine decay, gradients clipped to norm 1."""
    c.optimizer, c.weight_decay, c.schedule, c.warmup_steps, c.clip_grad_norm = "adamw", 1e-4, "warmup_cosine", 100, 1.0
    return c


def load_config(path: str | Path) -> ConfigDict:
    """`get_config()` of a config file (what `--config FILE` reads, without command-line overrides)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    spec = importlib.util.spec_from_file_location(f"clipaway_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def parse_config(path: str | Path, overrides: list[str]) -> ConfigDict:
    """The config file with `--config.KEY=VALUE` overrides applied (absl + ml_collections' config_flags,
    parsed from the given arguments, not from sys.argv); unknown keys and ill-typed values are errors
    naming the key."""
    from absl import flags
    from ml_collections import config_flags

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    argv = ["clipaway-jax train", f"--config={path}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "the training config", flag_values=values, lock_config=True,
                                    sys_argv=argv)  # fmt: skip
    try:
        rest = values(argv)
    except (AttributeError, KeyError) as err:  # ml_collections: the key and a "did you mean"
        raise ValueError(f"{path}: the config has no field {_one_line(err)}") from None
    except (flags.Error, TypeError, ValueError) as err:
        raise ValueError(f"{path}: {_one_line(err)}") from None
    if len(rest) > 1:
        raise ValueError(f"unexpected arguments {rest[1:]} (overrides are --config.KEY=VALUE)")
    return values.config


def check(config: ConfigDict, path: str | Path = "config") -> None:
    if config.task not in TASKS:
        raise ValueError(f"{path}: task must be one of {', '.join(TASKS)}, found {config.task!r}")
    if not config.checkpoint:
        raise ValueError(f"{path}: checkpoint is not set (--config.checkpoint=DIR)")
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"{path}: steps and batch_size must be >= 1, found {config.steps} and {config.batch_size}")


def resolved(config: ConfigDict, path: str | Path | None = None) -> dict:
    """Plain JSON of the run's config, as written into the workdir and the exported manifest."""
    plain = json.loads(FrozenConfigDict(config).to_json_best_effort())
    return {"config_file": str(path) if path else None, **plain}


# where a run read and wrote, not how it trained
PATHS = ("config_file", "checkpoint", "data_dir")


def changes(recorded: dict, settings: dict, prefix: str = "") -> list[str]:
    """'key: recorded -> now' for each setting of a run's resolved config that differs from `settings` (paths
    aside). A key that one of them lacks is not compared: a record older than a field ran before it existed."""
    found = []
    for key in sorted(set(recorded) & set(settings) - set(PATHS if not prefix else ())):
        old, new = recorded[key], settings[key]
        if isinstance(old, dict) and isinstance(new, dict):
            found += changes(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key}: {old} -> {new}")
    return found


def _one_line(err: BaseException) -> str:
    while err.args and isinstance(err.args[0], BaseException):  # (an AttributeError holding a KeyError)
        err = err.args[0]
    text = str(err.args[0]) if err.args else str(err)
    return " ".join(text.replace("'", "").split())
