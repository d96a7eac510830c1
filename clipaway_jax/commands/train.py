"""`clipaway-jax train TASK` (also `python -m train`): CLIPAway's MLP, DCGD's UNet fine-tune, and the
trainings from scratch of a world without published weights (AlphaCLIP + text tower, image encoder, VAE,
inpainting UNet with IP-Adapter: see clipaway_jax.mini)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

DESCRIPTION = textwrap.dedent(
    """\
    Runs the training a config file describes (ml_collections, as in flax's examples: train/configs/
    holds the published runs and each stage of the mini recipe); any field is overridden on the command
    line with --config.KEY=VALUE. Resumes from WORKDIR automatically (params, optimizer, step, data
    position) when its run has the same settings (paths aside); one of other settings (more steps, another
    learning rate) stops with the list of changes unless --continue-changed says to go on. The resolved
    config is written to WORKDIR/config.json and, with --export, into the exported manifest beside each
    trained network.

    Tasks (config.task): mlp (CLIPAway's MLP: AlphaCLIP(image, alpha=1) -> the IP-Adapter ViT-H
    image_embeds, MSE), unet (the inpainting UNet fine-tuned with DCGD's noise MSE; 12 channels with
    unet_variant dcgd12), and the trainings from scratch of a world without published weights
    (architectures from the checkpoint manifest's `init` section): alpha-clip (AlphaCLIP + its text
    tower, contrastive), image-encoder (the IP-Adapter's image tower, contrastive), vae, inpaint
    (9-channel UNet + IP-Adapter under random masks), t2i (the blended base's UNet: the inpainting one
    with its mask inputs folded into conv_in, conv_in trained; stored as an overlay). `make mini` runs
    the mini_* configs in order (clipaway_jax/mini/recipe.py).

    examples:
      clipaway-jax train --config train/configs/clipaway_mlp.py --workdir runs/mlp \\
          --export checkpoints/clipaway-retrained
      clipaway-jax train --config train/configs/clipaway_mlp.py --workdir runs/mlp-short \\
          --config.steps=2000 --config.images=my/photos
      clipaway-jax train --config train/configs/dcgd_unet.py --workdir runs/dcgd --config.fsdp=8
      clipaway-jax train --config train/configs/mini_inpaint.py --workdir runs/inpaint \\
          --config.steps=14000 --continue-changed   # a finished run, 3000 steps more
      python -m train --config train/configs/mini_vae.py --workdir runs/vae --config.learning_rate=5e-4
    """
)


def add_parser(sub) -> None:
    from clipaway_jax.commands.infer import add_distributed

    p = sub.add_parser("train", help="run a training config (CLIPAway's MLP, DCGD's UNet, the mini world)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="the run's config file (train/configs/*.py); then --config.KEY=VALUE overrides")  # fmt: skip
    p.add_argument("--workdir", type=Path, required=True, help="checkpoints, metrics.jsonl, tensorboard/, config.json")
    p.add_argument("--export", type=Path, help="write a checkpoint for remove/infer with the trained networks")
    p.add_argument("--continue-changed", action="store_true",
                   help="resume WORKDIR's run although its config.json records other settings (that record is "
                        "kept as config.step-N.json, N the step it reached)")  # fmt: skip
    add_distributed(p)
    p.add_argument("--debug-step-sleep", type=float, default=0.0, help=argparse.SUPPRESS)
    p.set_defaults(run=main, overrides_allowed=True)


def read_config(args):
    """The run's config: the file, `--config.KEY=VALUE` overrides (args.overrides), checked."""
    from clipaway_jax.training.config import check, parse_config

    config = parse_config(args.config, list(getattr(args, "overrides", [])))
    check(config, args.config)
    return config


def train_config(config):
    from clipaway_jax.training.trainer import TrainConfig

    return TrainConfig(
        steps=config.steps, global_batch=config.batch_size, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, optimizer=config.optimizer, schedule=config.schedule,
        warmup_steps=config.warmup_steps, clip_grad_norm=config.clip_grad_norm, seed=config.seed,
        save_every=config.save_every, keep=config.keep, eval_every=config.eval_every, log_every=config.log_every,
        ema_decay=config.ema_decay,
    )  # fmt: skip


def multihost_barrier(name: str) -> None:
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def first_process_then_all(work):
    """Run `work` on process 0, then (after a barrier) on the others: shared-disk preparation, once."""
    import jax

    if jax.process_index() == 0:
        result = work()
    multihost_barrier("clipaway-jax training data prepared")
    return result if jax.process_index() == 0 else work()


def data_source(config, workdir: Path):
    import tensorflow_datasets as tfds

    from clipaway_jax.training.data import build_folder_dataset

    data_dir = Path(config.data_dir) if config.data_dir else workdir / "data"
    if config.images:
        return first_process_then_all(lambda: build_folder_dataset(Path(config.images), data_dir))
    if config.tfds:
        name, _, split = config.tfds.partition(":")
        return tfds.data_source(name, split=split or "train", data_dir=str(data_dir))
    raise ValueError("the config names no data: set images (a folder) or tfds (NAME:SPLIT), e.g. "
                     "--config.images=DIR")  # fmt: skip


@dataclasses.dataclass
class Task:
    """What a training needs: the trained networks' manifest entries and params ({name: params}, plus
    e.g. a contrastive `logit_scale`), the loss, the frozen networks, the batch loader, the data size,
    and `finish(params) -> {name: entry updates}` for what is measured after training."""

    entries: dict
    params: dict
    loss: Any
    frozen: Any
    load: Any
    size: int
    finish: Any = None
    exported: Any = None  # params -> {name: whole network}, where the task trains only some of its modules


DECODER_MODULES = ("decoder", "post_quant_conv")  # a VAE's modules that only decoding uses


def main(args) -> int:
    from clipaway_jax.commands.infer import init_distributed

    config = read_config(args)  # a wrong file or field fails before anything starts
    init_distributed(args)
    import jax

    from clipaway_jax.atomic import write_atomic
    from clipaway_jax.sharding import FSDP_RULES, REPLICATED, make_mesh
    from clipaway_jax.training.config import resolved

    cfg = train_config(config)
    record = resolved(config, args.config)
    before = check_workdir(args.workdir, record, args.continue_changed)
    multihost_barrier("clipaway-jax workdir checked")  # every process read the record before it is replaced
    if jax.process_index() == 0:  # what this run is, beside its checkpoints (and how it was trained before)
        args.workdir.mkdir(parents=True, exist_ok=True)
        if before:
            old = (args.workdir / "config.json").read_bytes()
            write_atomic(args.workdir / f"config.step-{before}.json", lambda f: f.write(old))
        write_atomic(args.workdir / "config.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    mesh = make_mesh(fsdp=config.fsdp)
    rules = FSDP_RULES if config.fsdp > 1 else REPLICATED
    task = TASKS[config.task](config, args.workdir, cfg)
    _train(args, config, cfg, mesh, rules, task, record)
    if jax.process_index() == 0:
        print(f"trained {', '.join(task.entries)} for {cfg.steps} steps; logs in {args.workdir}")
    return 0


def last_step(workdir: Path) -> int | None:
    """The step of WORKDIR's latest checkpoint (orbax names a finished one by its step alone), or None."""
    folder = workdir / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=None)


def check_workdir(workdir: Path, record: dict, allow_changes: bool) -> int | None:
    """Refuse to resume WORKDIR's run under other settings than its config.json records, unless allowed: a
    cosine schedule, the data order and the batch all depend on them, and the record would no longer say how
    the checkpoint was trained. Returns the step of a run continued under changed settings, else None."""
    from clipaway_jax.training.config import changes

    path, step = workdir / "config.json", last_step(workdir)
    if step is None or not path.is_file():
        return None  # nothing to resume: a fresh start
    changed = changes(json.loads(path.read_text()), record)
    if not changed:
        return None
    if not allow_changes:
        raise SystemExit(f"{workdir} holds a run (step {step}) with other settings than these: "
                         f"{'; '.join(changed)}. Give a new --workdir to start afresh, or --continue-changed "
                         f"to resume it under the new settings.")  # fmt: skip
    import jax

    if jax.process_index() == 0:
        print(f"resuming {workdir} at step {step} with changed settings: {'; '.join(changed)}")
    return step


def _mlp_task(config, workdir, cfg):
    import numpy as np

    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.training import tasks
    from clipaway_jax.training.data import ArrayLoader, decode_image

    # frozen towers stay host-local numpy: each process replicates them over its own devices when caching
    ckpt = load_checkpoint(Path(config.checkpoint), networks=["alpha_clip", "image_encoder"])
    entry = {"class": "CLIPAwayMLP", "config": _mlp_config(ckpt).to_dict()}
    params = {"mlp": init_params(entry, cfg.seed)}
    module = _module(entry, config)
    frozen = jax_tree_numpy({name: {"params": ckpt.params[name]} for name in ("alpha_clip", "image_encoder")})
    alpha_clip, encoder = ckpt.module("alpha_clip"), ckpt.module("image_encoder")
    source = data_source(config, workdir)
    size = config.size
    if config.cache_embeddings:
        arrays = _cached_embeddings(workdir, source, alpha_clip, encoder, frozen, size)
        load = ArrayLoader(arrays)
        return Task({"mlp": entry}, params, tasks.mlp_loss(module), None, load, len(arrays["alpha_embeds"]))
    load = lambda idx: {"images": np.stack([decode_image(source[int(i)]["image"], size) for i in idx])}
    loss = tasks.mlp_loss_from_images(module, alpha_clip, encoder)
    return Task({"mlp": entry}, params, loss, frozen, load, len(source))


def _cached_embeddings(workdir, source, alpha_clip, encoder, frozen, size):
    import jax

    from clipaway_jax.training import tasks

    folder = workdir / "embeddings"
    if not (folder / "manifest.json").is_file():  # every process encodes its slice on its devices
        start = time.perf_counter()
        tasks.cache_embeddings(source, alpha_clip, encoder, frozen, folder, image_size=size)
        if jax.process_index() == 0:
            print(f"cached embeddings of {len(source)} images in {time.perf_counter() - start:.1f} s")
    multihost_barrier("clipaway-jax embeddings manifest written")
    return tasks.load_cache(folder)


def _mlp_config(ckpt):
    from clipaway_jax.models import MLPConfig

    alpha = ckpt.module("alpha_clip").config.projection_dim
    target = ckpt.module("image_encoder").config.projection_dim
    return MLPConfig(alpha_clip_embed_dim=alpha, ip_adapter_embed_dim=target)


def _unet_task(config, workdir, cfg):
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.models.dcgd import dcgd12_from_inpaint
    from clipaway_jax.tokenizer import load_tokenizer, tokenize
    from clipaway_jax.training import tasks

    ckpt = load_checkpoint(Path(config.checkpoint), networks=["unet", "vae", "text_encoder"])
    unet = ckpt.module("unet", _activation_dtype(config)).clone(remat=config.remat)
    params = ckpt.params["unet"]
    entry = dict(ckpt.manifest["networks"]["unet"])
    entry.pop("params_of", None)
    if config.unet_variant == "dcgd12":
        params, unet_config = dcgd12_from_inpaint(jax_tree_numpy(params), unet.config)
        unet = unet.clone(config=unet_config)
        entry["config"] = unet_config.to_dict()
    frozen = jax_tree_numpy({name: {"params": ckpt.params[name]} for name in ("vae", "text_encoder")})
    source = data_source(config, workdir)
    if config.captions:  # a data set with captions (mini_scenes): its object masks and scene captions
        load = _inpaint_loader(config, source, ckpt, workdir, unet, with_embeds=False)
    else:
        ids = tokenize(load_tokenizer(ckpt.tokenizer_path), [config.prompt])[0]
        load = tasks.unet_batch_loader(source, config.size, ids, config.seed, tuple(config.mask_area))
    name = "unet_dcgd12" if config.unet_variant == "dcgd12" else "unet"
    loss = tasks.unet_loss(unet, ckpt.module("vae"), ckpt.module("text_encoder"), ckpt.manifest.get("scheduler", {}),
                           name, snr_gamma=config.snr_gamma, mask_weight=config.mask_weight,
                           timestep_bias=dict(config.timestep_bias))  # fmt: skip
    return Task({name: entry}, {name: params}, loss, frozen, load, len(source))


# --- trainings from scratch (a world without published weights: see clipaway_jax.mini) -------------


def _new_networks(config, cfg, names):
    """Entries and initial params of networks the checkpoint does not have yet: their architectures
    come from the checkpoint manifest's `init` section (written by e.g. `clipaway_jax.mini.models`)."""
    from clipaway_jax.checkpoint import read_manifest

    manifest = read_manifest(Path(config.checkpoint))
    missing = [n for n in names if n not in manifest.get("init", {})]
    if missing:
        raise ValueError(f"{Path(config.checkpoint)}: the manifest's 'init' section has no architecture for {missing}")
    entries = {n: manifest["init"][n] for n in names}
    return entries, {n: init_params(entry, cfg.seed + i) for i, (n, entry) in enumerate(entries.items())}


def _contrastive_task(vision_name, text_name, alpha):
    def task(config, workdir, cfg):
        from clipaway_jax.mini.batches import PairRecipe, contrastive_loader
        from clipaway_jax.tokenizer import load_tokenizer
        from clipaway_jax.training.pretrain import contrastive_loss

        tokenizer = load_tokenizer(Path(config.checkpoint) / "tokenizer")
        if config.vision_only:
            entries, params, frozen = _trained_vision(config, vision_name, text_name)
        else:
            entries, params, frozen = _fresh_pair(config, cfg, vision_name, text_name)
        text = _text_module(config, text_name)
        classes = None
        if config.class_weight:
            if not config.vision_only:
                raise ValueError(f"{config.task}: class_weight needs vision_only (the class features come from "
                                 "the frozen text tower)")  # fmt: skip
            classes, frozen["class_features"] = _class_features(config, text, frozen[text_name], tokenizer)
        if config.anchor_weight:
            if not config.class_weight:
                raise ValueError(f"{config.task}: anchor_weight needs class_weight (it anchors the pairs without "
                                 "a class)")  # fmt: skip
            import jax
            import numpy as np

            # its own copy: the trained params' buffers are donated to each step
            frozen["anchor"] = {"params": jax.tree_util.tree_map(np.copy, params[vision_name])}
        loss = contrastive_loss(_module(entries[vision_name], config), text, vision_name, text_name,
                                config.class_weight, config.anchor_weight)  # fmt: skip
        source = data_source(config, workdir)
        recipe = PairRecipe(config.background_p, config.shape_p, tuple(config.pair_kinds))
        load = contrastive_loader(source, tokenizer, config.seed, alpha, recipe, classes)
        scale = lambda p: {n: {"logit_scale": float(p["logit_scale"])} for n in entries}
        return Task(entries, params, loss, frozen, load, len(source), scale)

    return task


def _fresh_pair(config, cfg, vision_name, text_name):
    import numpy as np

    from clipaway_jax.training.pretrain import INIT_LOGIT_SCALE

    entries, params = _new_networks(config, cfg, [vision_name, text_name])
    params["logit_scale"] = np.float32(INIT_LOGIT_SCALE)
    return entries, params, None


def _trained_vision(config, vision_name, text_name):
    """The checkpoint's trained vision tower and temperature to continue (float32), its text tower frozen:
    in the mini world the text tower is also the SD text encoder, so every UNet keeps its condition."""
    import numpy as np

    from clipaway_jax.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(config.checkpoint), networks=[vision_name, text_name])
    entry = ckpt.manifest["networks"][vision_name]
    if not entry.get("trained") or "logit_scale" not in entry:
        raise ValueError(f"{config.checkpoint}: vision_only continues a trained {vision_name!r} with its "
                         f"logit_scale; the manifest's entry has {sorted(entry)}")  # fmt: skip
    params = {vision_name: _as_float32(ckpt.params[vision_name]), "logit_scale": np.float32(entry["logit_scale"])}
    return {vision_name: _continued(entry)}, params, {text_name: {"params": _as_float32(ckpt.params[text_name])}}


def _as_float32(tree):
    """A stored network's params as float32 numpy arrays (a continued network trains in float32, whatever its
    checkpoint's dtype)."""
    import jax
    import numpy as np

    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)


def _continued(entry: dict) -> dict:
    """The manifest entry of a trained network that a task continues: its architecture and what was measured,
    less the marks of its last run, whose training record goes under `continues` with those before it (where
    the recipe finds the record of the stage it continues: `clipaway_jax.mini.recipe.record`)."""
    kept = {k: v for k, v in entry.items() if k not in ("trained", "training", "dtype", "params_of")}
    return kept | {"continues": [entry["training"], *entry.get("continues", [])]} if "training" in entry else kept


def _text_module(config, text_name):
    """The text tower as the checkpoint has it (vision_only: trained) or as its `init` section describes it."""
    from clipaway_jax.checkpoint import read_manifest

    manifest = read_manifest(Path(config.checkpoint))
    source = manifest["networks"] if config.vision_only else manifest["init"]
    return _module(source[text_name], config)


def _class_features(config, text, text_params, tokenizer):
    """{label: index} over the checkpoint's vocabularies (objects, then scenes) and their zero-shot
    features as the describer computes them (the template ensembles of the frozen text tower)."""
    import numpy as np

    from clipaway_jax.pipelines.describe import encode_vocab, read_vocab

    vocab = Path(config.checkpoint) / "vocab"
    labels = read_vocab(vocab / "objects.txt") + read_vocab(vocab / "scenes.txt")
    features = encode_vocab(text, text_params, tokenizer, labels).features
    return {label: i for i, label in enumerate(labels)}, np.asarray(features, np.float32)


def _vae_task(config, workdir, cfg):
    from clipaway_jax.mini.batches import image_loader
    from clipaway_jax.training.pretrain import vae_loss

    source = data_source(config, workdir)
    load = image_loader(source)
    if config.decoder_only:
        return _vae_decoder_task(config, source, load)
    if config.latent_noise:  # a VAE from nothing has no latent scale yet, and its encoder would outgrow the noise
        raise ValueError(f"{config.task}: latent_noise needs decoder_only (the trained VAE's decoder, its encoder "
                         "frozen)")  # fmt: skip
    entries, params = _new_networks(config, cfg, ["vae"])
    module = _module(entries["vae"], config)
    finish = lambda p: {"vae": {"config": {**entries["vae"]["config"], "scaling_factor": _latent_scale(module, p,
                        load, len(source))}}}  # fmt: skip
    return Task(entries, params, vae_loss(module, l2_weight=config.vae_l2_weight), None, load, len(source), finish)


def _vae_decoder_task(config, source, load):
    """The checkpoint's trained VAE continued with its encoder frozen: the latent space, its scaling_factor
    and so every UNet trained on it stay as they are, while the decoder trains on (`latent_noise`) the
    slightly-off latents a sampler ends on."""

    from clipaway_jax.checkpoint import load_checkpoint, read_manifest
    from clipaway_jax.training.pretrain import vae_loss

    entry = read_manifest(Path(config.checkpoint))["networks"].get("vae", {})
    if not entry.get("trained"):
        raise ValueError(f"{config.checkpoint}: decoder_only continues a trained 'vae', and the manifest has "
                         "none (train the vae stage first)")  # fmt: skip
    ckpt = load_checkpoint(Path(config.checkpoint), networks=["vae"])
    weights = _as_float32(ckpt.params["vae"])
    decoder = {k: v for k, v in weights.items() if k in DECODER_MODULES}
    encoder = {k: v for k, v in weights.items() if k not in DECODER_MODULES}
    loss = vae_loss(_module(entry, config), l2_weight=config.vae_l2_weight, latent_noise=config.latent_noise)
    whole = lambda p: {"vae": {**encoder, **p["vae"]}}
    frozen = {"vae": {"params": encoder}}
    return Task({"vae": _continued(entry)}, {"vae": decoder}, loss, frozen, load, len(source), exported=whole)


def _latent_scale(vae, params, load, size, count=512):
    """1 / std of the posterior samples' latents over `count` training images, as SD set 0.18215."""
    import jax
    import numpy as np

    images = load(np.arange(min(count, size)))["images"]
    posterior = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode"))(params["vae"], images * 2 - 1)
    latents = np.asarray(posterior.sample(jax.random.key(0)))
    return float(1.0 / latents.std())


def _inpaint_task(config, workdir, cfg):
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.training import tasks

    frozen_names = ["vae", "text_encoder", "image_encoder"]
    ckpt = load_checkpoint(Path(config.checkpoint), networks=frozen_names)
    entries, params = _new_networks(config, cfg, ["unet", "image_proj"])
    unet = _module(entries["unet"], config).clone(remat=config.remat)
    frozen = jax_tree_numpy({name: {"params": ckpt.params[name]} for name in frozen_names})
    loss = tasks.unet_loss(unet, ckpt.module("vae"), ckpt.module("text_encoder"), ckpt.manifest.get("scheduler", {}),
                           "unet", ckpt.module("image_encoder"), _module(entries["image_proj"], config),
                           config.snr_gamma, config.mask_weight, dict(config.timestep_bias))  # fmt: skip
    source = data_source(config, workdir)
    load = _inpaint_loader(config, source, ckpt, workdir, unet, with_embeds=True)
    return Task(entries, params, loss, frozen, load, len(source))


def _t2i_task(config, workdir, cfg):
    """unet_t2i = the inpainting UNet with conv_in folded to 4 channels; only conv_in trains (an overlay)."""
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.models import UNetConfig
    from clipaway_jax.training import tasks

    frozen_names = ["unet", "image_proj", "vae", "text_encoder", "image_encoder"]
    ckpt = load_checkpoint(Path(config.checkpoint), networks=frozen_names)
    base = dict(ckpt.manifest["networks"]["unet"])
    latent = base["config"].get("out_channels", 4)  # the text-to-image UNet takes x_t alone
    unet_config = UNetConfig.from_dict({**base["config"], "in_channels": latent})
    entry = {k: v for k, v in base.items() if k not in ("sources", "trained", "training")}
    entry |= {"config": unet_config.to_dict(), "params_of": "unet", "overlay": ["conv_in"],
              "initialized_from": "unet (9-channel inpainting), mask inputs folded into conv_in"}  # fmt: skip
    vae = ckpt.module("vae")
    size = ckpt.module("unet").config.sample_size * vae.config.scale_factor
    conv_in = tasks.text_to_image_from_inpaint(ckpt.params["unet"], vae, ckpt.params["vae"], size)
    frozen = jax_tree_numpy({name: {"params": ckpt.params[name]} for name in frozen_names})
    unet = _module(entry, config).clone(remat=config.remat)
    inner = tasks.unet_loss(unet, vae, ckpt.module("text_encoder"), ckpt.manifest.get("scheduler", {}), "unet_t2i",
                            ckpt.module("image_encoder"), ckpt.module("image_proj"), config.snr_gamma,
                            timestep_bias=dict(config.timestep_bias))  # fmt: skip

    def loss(params, frozen, batch, rng):
        full = {**frozen["unet"]["params"], **params["unet_t2i"]}
        return inner({"unet_t2i": full, "image_proj": frozen["image_proj"]["params"]}, frozen, batch, rng)

    source = data_source(config, workdir)
    load = _inpaint_loader(config, source, ckpt, workdir, unet, with_embeds=True)
    return Task({"unet_t2i": entry}, {"unet_t2i": {"conv_in": conv_in}}, loss, frozen, load, len(source))


def _inpaint_loader(config, source, ckpt, workdir, unet, with_embeds: bool):
    """Batches of a mini_scenes-like set (object and random masks, captions) as the config's recipe says;
    with `cache_latents`, what the frozen VAE (and image encoder) make of them instead, computed once."""
    from clipaway_jax.mini.batches import inpaint_loader
    from clipaway_jax.tokenizer import load_tokenizer
    from clipaway_jax.training.config import inpaint_recipe

    load = inpaint_loader(source, load_tokenizer(ckpt.tokenizer_path), config.seed, inpaint_recipe(config))
    return _cached_inputs(config, workdir, load, len(source), unet, ckpt, with_embeds) if config.cache_latents else load


def _cached_inputs(config, workdir, load, count, unet, ckpt, with_embeds):
    """Every example's VAE posteriors (and image embedding) under its seeded mask, in WORKDIR/latents: the
    loader gives each example the same mask and caption in every epoch, so they are fixed per example.
    Sampling from the posterior stays in the step. A cache made for another setting is refused."""
    import numpy as np

    from clipaway_jax.models.dcgd import unet_kind
    from clipaway_jax.training import tasks
    from clipaway_jax.training.config import inpaint_recipe
    from clipaway_jax.training.data import ArrayLoader

    folder = workdir / "latents"
    setting = {"checkpoint": str(Path(config.checkpoint).resolve()), "data": config.tfds or config.images,
               "seed": config.seed, "recipe": repr(inpaint_recipe(config)), "unet": unet_kind(unet.config),
               "image_embeds": with_embeds}  # fmt: skip
    if not (folder / "manifest.json").is_file():
        names = ["vae", "image_encoder"] if with_embeds else ["vae"]
        frozen = jax_tree_numpy({name: {"params": ckpt.params[name]} for name in names})
        encode = tasks.frozen_inputs(unet, ckpt.module("vae"), ckpt.module("image_encoder") if with_embeds else None)
        as_stored = lambda batch: {**batch, "masks": batch["masks"].astype(np.uint8)}  # masks are 0 / 1
        start = time.perf_counter()
        tasks.write_cache(count, lambda idx: as_stored(load(idx)), lambda f, b: encode(f, b["images"], b["masks"]),
                          frozen, folder, keep=("masks", "text_ids", "keep_image"),
                          meta={"setting": setting})  # fmt: skip
        print(f"cached the frozen networks' inputs of {count} examples in {time.perf_counter() - start:.1f} s")
    multihost_barrier("clipaway-jax latents manifest written")
    found = json.loads((folder / "manifest.json").read_text()).get("setting")
    if found != setting:
        raise ValueError(f"{folder} was cached for {found}, this run is {setting}: remove it to cache again")
    arrays = tasks.load_cache(folder)
    arrays["masks"] = arrays["masks"].astype(np.float32)
    return ArrayLoader(arrays)


TASKS = {"mlp": _mlp_task, "unet": _unet_task, "alpha-clip": _contrastive_task("alpha_clip", "text_encoder", True),
         "image-encoder": _contrastive_task("image_encoder", "encoder_text", False), "vae": _vae_task,
         "inpaint": _inpaint_task, "t2i": _t2i_task}  # fmt: skip


def init_params(entry: dict, seed: int):
    """Freshly initialized params (numpy) of the network a manifest entry describes."""
    import flax
    import jax

    from clipaway_jax.checkpoint import build_module

    module, inputs = build_module(entry)
    if not inputs:
        from clipaway_jax.models import example_inputs

        inputs = example_inputs(module)
    params = jax.jit(module.init)(jax.random.key(seed), *inputs)["params"]  # eager init is slow
    return jax_tree_numpy(flax.core.meta.unbox(params))


def _module(entry: dict, config):
    from clipaway_jax.checkpoint import build_module

    return build_module(entry, _activation_dtype(config))[0]


def _activation_dtype(config):
    """Mixed precision where it pays: bfloat16 activations on accelerators (their matmul units, half the
    activation memory), float32 on CPU (XLA computes bfloat16 dots there in float32 anyway)."""
    import jax.numpy as jnp

    from clipaway_jax.commands.pipeline_args import compute_dtype

    return jnp.dtype(compute_dtype(config.precision))


def jax_tree_numpy(tree):
    import jax
    import numpy as np

    return jax.tree_util.tree_map(np.asarray, tree)


def _train(args, config, cfg, mesh, rules, task: Task, record: dict):
    import jax
    import numpy as np

    from clipaway_jax.training.data import ArrayLoader, BatchIterator, KeptLoader, host_memory
    from clipaway_jax.training.trainer import Checkpoints, Trainer

    holdout = int(task.size * config.val_fraction)
    train_indices = np.arange(holdout, task.size)
    load = task.load
    more_than_an_epoch = cfg.steps * cfg.global_batch > len(train_indices)
    if more_than_an_epoch and not isinstance(task.load, ArrayLoader):  # (a cache's arrays are kept already)
        load = KeptLoader(task.load, task.size, budget=host_memory() // 4)
    iterator = BatchIterator(len(train_indices), cfg.global_batch, lambda idx: load(train_indices[idx]),
                             cfg.seed, jax.process_index(), jax.process_count())  # fmt: skip
    trainer = Trainer(cfg, task.loss, abstract_tree(task), task.params, args.workdir, mesh, rules, task.frozen)
    checkpoints = Checkpoints(args.workdir, cfg)
    as_target = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    restored = checkpoints.restore_latest(jax.tree_util.tree_map(as_target, trainer.state, trainer.state_sharding))
    if restored is not None:
        trainer.state, iterator.state = restored
        trainer.log.write({"event": "resumed", "step": int(trainer.state.step)})
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=int(trainer.state.step), unit="step", disable=jax.process_index() != 0)
    try:  # a NaN stop or a crash still lets the pending async save finish: the last checkpoint stays whole
        _loop(cfg, trainer, iterator, checkpoints, task.load, holdout, bar, args.debug_step_sleep)
    finally:
        bar.close()
        checkpoints.close()
    if args.export:  # with ema_decay, the moving average (as diffusers' training scripts save it)
        params = jax.device_get(trainer.state.ema if trainer.state.ema is not None else trainer.state.params)
        entries = {name: dict(entry) for name, entry in task.entries.items()}
        for name, update in (task.finish(params) if task.finish else {}).items():
            entries[name] |= update
        for entry in entries.values():  # every exported network says how it was trained
            entry["training"] = record
        params = task.exported(params) if task.exported else params
        export(Path(config.checkpoint), args.export, {name: params[name] for name in entries}, entries)


def abstract_tree(task: Task) -> dict:
    """{"params": the boxed abstract params of every trained network, plain shapes for other leaves}."""
    import jax
    import numpy as np

    from clipaway_jax.checkpoint import entry_abstract_params

    tree = {}
    for name, value in task.params.items():
        if name in task.entries:
            whole = entry_abstract_params(task.entries[name])["params"]
            tree[name] = {k: whole[k] for k in value}  # the modules that train (an overlay's, a decoder's)
        else:
            tree[name] = jax.ShapeDtypeStruct(np.shape(value), np.asarray(value).dtype)
    return {"params": tree}


def _loop(cfg, trainer, iterator, checkpoints, load, holdout, bar, step_sleep: float = 0.0):
    start_step, t0, examples = int(trainer.state.step), time.perf_counter(), 0
    while int(trainer.state.step) < cfg.steps:
        metrics = trainer.train_step(next(iterator))
        step = metrics["step"]
        examples += cfg.global_batch
        if step_sleep:  # (tests: a run slow enough to be killed midway)
            time.sleep(step_sleep)
        val = _validation(trainer, load, holdout, cfg) if holdout and step % cfg.eval_every == 0 else None
        elapsed = time.perf_counter() - t0
        record = {**metrics, "lr": trainer.lr(step), "steps_per_s": (step - start_step) / elapsed,
                  "examples_per_s": examples / elapsed, **({"val_loss": val} if val is not None else {})}  # fmt: skip
        if step % cfg.log_every == 0 or step == cfg.steps or val is not None:
            trainer.log.write(record)
            bar.set_postfix(loss=f"{metrics['loss']:.4g}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoints.save(step, trainer.state, iterator.state, val)
        bar.update(1)


def _validation(trainer, load, holdout, cfg):
    import numpy as np

    return trainer.eval_loss(load(np.arange(min(holdout, cfg.global_batch))))


def export(base: Path, out: Path, params: dict, entries: dict) -> None:
    """A copy of the base checkpoint with the trained networks added or replaced (the convert format).
    `out` may be `base`: the new checkpoint is built beside it and swapped in when complete."""
    import jax

    from clipaway_jax.checkpoint import read_manifest, save_network, write_manifest

    if jax.process_index() != 0:
        return
    manifest = read_manifest(base)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    for name in params:
        shutil.rmtree(tmp / "params" / name, ignore_errors=True)
        save_network(tmp, name, params[name])
        manifest["networks"][name] = {**entries[name], "trained": True}
    write_manifest(tmp, {k: v for k, v in manifest.items() if k not in ("format", "package_version")})
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    print(f"exported {', '.join(params)} into {out}")
