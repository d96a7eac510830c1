"""The trainings from scratch (`train alpha-clip / image-encoder / vae / inpaint`) on a small mini_scenes
set, at micro sizes: each learns on a fixed batch, and a run stopped midway resumes to the same params
bit for bit. `make mini`'s recipe strings the same commands together."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from clipaway_jax.cli import main as cli_main

SIZE = 32
MICRO = {
    "alpha_clip": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
                       image_size=SIZE, patch_size=8, projection_dim=16, hidden_act="quick_gelu", alpha=True),
    "image_encoder": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          image_size=SIZE, patch_size=8, projection_dim=24, hidden_act="gelu"),
    "vae": dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, norm_num_groups=4,
                sample_size=SIZE, scaling_factor=1.0),
    "unet": dict(sample_size=SIZE // 2, in_channels=9, out_channels=4, block_out_channels=(16,),
                 layers_per_block=1, norm_num_groups=8, cross_attention_dim=32, attention_head_dim=2,
                 down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",)),
}  # fmt: skip
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
STEPS = {"alpha-clip": ["alpha_clip", "text_encoder"], "image-encoder": ["image_encoder", "encoder_text"],
         "vae": ["vae"], "inpaint": ["unet", "image_proj"]}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 48-scene mini_scenes set at 32 px and a skeleton checkpoint with micro architectures; the frozen
    networks the inpainting task needs are added untrained (export of fresh params)."""
    from clipaway_jax.checkpoint import write_manifest
    from clipaway_jax.mini.dataset import build
    from clipaway_jax.mini.models import write_skeleton

    root = tmp_path_factory.mktemp("mini")
    build(root / "data", seed=0, size=SIZE, splits={"train": 48})
    skeleton = write_skeleton(root / "skeleton")
    manifest = json.loads((skeleton / "manifest.json").read_text())
    init = manifest["init"]
    for name, config in MICRO.items():
        init[name]["config"] = config
    init["text_encoder"]["config"] |= TEXT | {"projection_dim": 16}
    init["encoder_text"]["config"] |= TEXT | {"projection_dim": 24}
    init["image_proj"]["config"] = dict(num_tokens=2, embed_dim=24, cross_attention_dim=32)
    write_manifest(skeleton, {k: v for k, v in manifest.items() if k not in ("format", "package_version")})
    from clipaway_jax.commands.train import export, init_params

    frozen = root / "with-frozen"
    names = ("alpha_clip", "text_encoder", "image_encoder", "encoder_text", "vae")
    temperature = {"logit_scale": 2.0}  # what a contrastive stage exports with its pair (vision_only continues it)
    entries = {n: init[n] | (temperature if n in ("alpha_clip", "text_encoder") else {}) for n in names}
    export(skeleton, frozen, {n: init_params(init[n], i) for i, n in enumerate(names)}, entries)
    return root, frozen


CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"
STAGE_CONFIGS = {"alpha-clip": "mini_alpha_clip.py", "image-encoder": "mini_image_encoder.py", "vae": "mini_vae.py",
                 "inpaint": "mini_inpaint.py", "t2i": "mini_t2i.py"}  # fmt: skip


def _overrides(checkpoint, root, *extra):
    return [f"--config.checkpoint={checkpoint}", f"--config.data_dir={root / 'data'}", "--config.batch_size=8",
            "--config.learning_rate=2e-3", "--config.log_every=1", *extra]  # fmt: skip


def _args(task, checkpoint, root, workdir, *extra):
    """`make mini`'s stage config on the micro world."""
    return ["train", "--config", str(CONFIGS / STAGE_CONFIGS[task]), "--workdir", str(workdir),
            *_overrides(checkpoint, root, *extra)]  # fmt: skip


def _config(task, checkpoint, root, *extra):
    from clipaway_jax.training.config import parse_config

    return parse_config(CONFIGS / STAGE_CONFIGS[task], _overrides(checkpoint, root, *extra))


# the learning tests: a constant learning rate, no decay (the recipe's warm-up would not start in 8 steps)
PLAIN_OPTIMIZER = ("--config.optimizer=adam", "--config.schedule=constant", "--config.weight_decay=0.0",
                   "--config.clip_grad_norm=0.0")  # fmt: skip


@pytest.mark.parametrize("task", list(STEPS))
def test_each_training_from_scratch_learns_on_a_fixed_batch(world, task, tmp_path):
    from clipaway_jax.commands.train import TASKS, abstract_tree, train_config
    from clipaway_jax.sharding import REPLICATED, make_mesh
    from clipaway_jax.training.trainer import Trainer

    root, frozen = world
    config = _config(task, frozen, root, *PLAIN_OPTIMIZER)
    cfg = train_config(config)
    spec = TASKS[task](config, tmp_path, cfg)
    assert set(STEPS[task]) <= set(spec.params)
    trainer = Trainer(cfg, spec.loss, abstract_tree(spec), spec.params, tmp_path, make_mesh(), REPLICATED,
                      spec.frozen)  # fmt: skip
    batch = spec.load(np.arange(8))
    before = trainer.train_step(batch)["loss"]  # step 0's randomness, initial params
    for _ in range(7):
        trainer.train_step(batch)
    trainer.state = trainer.state.replace(step=jax.numpy.zeros_like(trainer.state.step))
    after = trainer.train_step(batch)["loss"]  # step 0's randomness again, trained params
    assert after < 0.9 * before, (task, before, after)
    if task == "vae":  # what is measured after training goes into the export: the latent scale
        scale = spec.finish(jax.device_get(trainer.state.params))["vae"]["config"]["scaling_factor"]
        assert scale > 0 and scale != 1.0


@pytest.mark.parametrize("task", ["alpha-clip"])  # the mechanism is the trainer's, shared by every task
def test_a_stopped_run_resumes_to_the_same_params(world, task, tmp_path):
    root, frozen = world
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # a constant learning rate: the cosine schedule's shape depends on the run's steps, which the stop changes
    run = [*PLAIN_OPTIMIZER, "--config.save_every=2"]
    assert cli_main(_args(task, frozen, root, straight, *run, "--config.steps=4")) == 0
    assert cli_main(_args(task, frozen, root, stopped, *run, "--config.steps=2")) == 0
    recorded = (stopped / "config.json").read_text()
    with pytest.raises(SystemExit, match="step 2.* other settings than these: steps: 2 -> 4"):
        cli_main(_args(task, frozen, root, stopped, *run, "--config.steps=4"))  # more steps: said, not assumed
    assert (stopped / "config.json").read_text() == recorded
    exported = tmp_path / "exported"
    assert cli_main(_args(task, frozen, root, stopped, *run, "--config.steps=4", "--continue-changed",
                          "--export", str(exported))) == 0  # fmt: skip
    assert (stopped / "config.step-2.json").read_text() == recorded  # how the first two steps were trained
    networks = json.loads((exported / "manifest.json").read_text())["networks"]
    assert networks["alpha_clip"]["logit_scale"] == networks["text_encoder"]["logit_scale"]  # the temperature
    records = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "resumed", "step": 2} in records
    leaves = [_params(workdir, 4) for workdir in (straight, stopped)]
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, b)


def _params(workdir, step):
    with ocp.CheckpointManager((workdir / "checkpoints").absolute()) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.tree_util.tree_leaves(restored["state"]["params"])


def test_the_export_adds_networks(world):
    """The frozen checkpoint got its networks through `export` (the trained-and-exported path, with what
    was measured, is the resume test's)."""
    from clipaway_jax.checkpoint import load_checkpoint

    _, frozen = world
    ckpt = load_checkpoint(frozen)
    networks = ckpt.manifest["networks"]
    assert {"alpha_clip", "text_encoder", "image_encoder", "vae"} <= set(networks)
    assert all(networks[n]["trained"] for n in networks)


def test_rest_caption_drops_one_occurrence_of_the_target():
    from clipaway_jax.mini.batches import rest_caption

    assert rest_caption("a red star on bricks", "a red star") == "bricks"
    assert rest_caption("a red star and a blue ring on sky", "a red star") == "a blue ring on sky"
    assert rest_caption("a red star, a red star and a blue ring on sky", "a red star") == (
        "a red star and a blue ring on sky"
    )


def test_checkpoint_pipeline_defaults_apply_only_to_flags_not_given():
    import argparse

    from clipaway_jax.commands import pipeline_args

    parser = argparse.ArgumentParser()
    pipeline_args.add(parser)

    def resolved(flags: list[str], own: dict) -> argparse.Namespace:
        args = parser.parse_args(flags)
        pipeline_args.resolve_defaults(args, {"pipeline_defaults": own} if own else {})
        return args

    args = resolved(["--steps", "7"], {"steps": 25, "scheduler": "ddim", "dilate_iterations": 1})
    assert (args.steps, args.scheduler, args.dilate_iterations) == (7, "ddim", 1)
    args = resolved([], {})  # the published settings
    assert (args.steps, args.scheduler, args.dilate_iterations, args.paste_back, args.guidance_scale) == (
        50, "pndm", 5, 0, 7.5)  # fmt: skip
    assert resolved([], {"guidance_scale": 2.0}).guidance_scale == 2.0  # the mini model's own default
    assert resolved(["--guidance-scale", "5"], {"guidance_scale": 2.0}).guidance_scale == 5.0  # the flag wins
    assert resolved([], {"paste_back": 1}).paste_back == 1
    assert resolved(["--paste-back", "0"], {"paste_back": 1}).paste_back == 0
    assert resolved([], {}).seamless is False and resolved([], {"seamless": True}).seamless is True
    assert resolved(["--no-seamless"], {"seamless": True}).seamless is False
    no_paste = resolved(["--paste-back", "0"], {"paste_back": 1, "seamless": True})
    assert pipeline_args.options(no_paste).seamless is False  # seamless is a way of pasting back
    assert resolved(["--base", "blended"], {}).scheduler == "ddim"  # Blended Latent Diffusion's sampler


@pytest.fixture(scope="module")
def with_unet(world):
    """The micro world's checkpoint with an (untrained) inpainting UNet and image_proj added."""
    from clipaway_jax.commands import train

    root, frozen = world
    init = json.loads((frozen / "manifest.json").read_text())["init"]
    names = ("unet", "image_proj")
    params = {n: train.init_params(init[n], 7 + i) for i, n in enumerate(names)}
    train.export(frozen, root / "with-unet", params, {n: init[n] for n in names})
    return root / "with-unet"


# configs that other tests already run through `clipaway-jax train --config` (each compile costs seconds)
RUN_ELSEWHERE = {"clipaway_mlp": "tests/test_train.py (every test there)",
                 "mini_alpha_clip": "test_a_stopped_run_resumes_to_the_same_params"}  # fmt: skip
TWO_STEPS = [p for p in sorted(CONFIGS.glob("*.py")) if p.stem not in RUN_ELSEWHERE]


def test_every_config_in_train_configs_is_run_by_a_test():
    assert {p.stem for p in CONFIGS.glob("*.py")} == {p.stem for p in TWO_STEPS} | set(RUN_ELSEWHERE)
    assert (CONFIGS / "clipaway_mlp.py").is_file() and "clipaway_mlp.py" in (
        Path(__file__).parent / "test_train.py").read_text()  # fmt: skip


@pytest.mark.parametrize("path", TWO_STEPS, ids=lambda p: p.stem)
def test_every_config_in_train_configs_runs_two_steps(world, with_unet, path, tmp_path):
    """Each run of train/configs/ (the published ones and every mini stage) loads and trains two steps on
    micro data: only paths, sizes and the batch are overridden, the rest is the file's own."""
    from PIL import Image

    from clipaway_jax.training.config import load_config

    root, frozen = world
    own = load_config(path)
    data = [f"--config.data_dir={root / 'data'}"]
    if own.images:  # an image-folder run (COCO, Places): a folder of 32 px images instead
        images = tmp_path / "images"
        images.mkdir()
        for i in range(8):
            pixels = np.random.default_rng(i).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
            Image.fromarray(pixels).save(images / f"{i}.png")
        data = [f"--config.images={images}", f"--config.data_dir={tmp_path / 'data'}"]
    checkpoint = with_unet if own.task in ("unet", "t2i") else frozen
    workdir = tmp_path / "run"
    assert cli_main(["train", "--config", str(path), "--workdir", str(workdir), f"--config.checkpoint={checkpoint}",
                     *data, "--config.steps=2", "--config.batch_size=2", f"--config.size={SIZE}", "--config.fsdp=1",
                     "--config.log_every=1", "--config.save_every=2"]) == 0  # fmt: skip
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert set(losses) == {1, 2} and all(np.isfinite(v) for v in losses.values())
    written = json.loads((workdir / "config.json").read_text())
    assert written["config_file"] == str(path) and written["task"] == own.task and written["steps"] == 2
    assert {k: v for k, v in written.items() if k in ("optimizer", "learning_rate", "schedule")} == {
        "optimizer": own.optimizer, "learning_rate": own.learning_rate, "schedule": own.schedule}


def test_t2i_trains_conv_in_and_stores_it_as_an_overlay(world, with_unet, tmp_path):
    """`train t2i`: the blended base's UNet is the inpainting UNet with a 4-channel conv_in; only conv_in is
    trained and stored, and the checkpoint restores the whole UNet from the two. (The task's loss is the
    inpainting one's, which learns above; `make mini` runs this task for real.)"""
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.commands import train

    root, _ = world
    config = _config("t2i", with_unet, root)
    task = train.TASKS["t2i"](config, tmp_path / "w", train.train_config(config))
    assert list(task.params) == ["unet_t2i"] and list(task.params["unet_t2i"]) == ["conv_in"]
    assert list(train.abstract_tree(task)["params"]["unet_t2i"]) == ["conv_in"]
    batch = task.load(np.arange(2))
    loss = jax.jit(task.loss)(task.params, task.frozen, batch, jax.random.key(0))
    assert np.isfinite(float(loss))
    out = tmp_path / "out"
    train.export(with_unet, out, task.params, task.entries)
    entry = json.loads((out / "manifest.json").read_text())["networks"]["unet_t2i"]
    assert (entry["params_of"], entry["overlay"], entry["config"]["in_channels"]) == ("unet", ["conv_in"], 4)
    stored = [p.name for p in (out / "params" / "unet_t2i").rglob("*") if p.is_dir()]
    assert not any("down_blocks" in name for name in stored), "only conv_in is stored"
    ckpt = load_checkpoint(out, networks=["unet", "unet_t2i"])
    t2i, unet = ckpt.params["unet_t2i"], ckpt.params["unet"]
    assert t2i["conv_in"]["kernel"].shape[2] == 4 and set(t2i) == set(unet)
    np.testing.assert_array_equal(t2i["conv_out"]["kernel"], unet["conv_out"]["kernel"])


def test_the_folded_conv_in_equals_the_inpainting_one_on_an_all_masked_input():
    """Away from the border, conv_in(x ⊕ 1 ⊕ z) of the 9-channel UNet with a constant latent z = the folded
    4-channel conv_in(x) (`train t2i` folds z = z(gray), the masked image's latent when all is masked)."""
    import flax.linen as nn

    from clipaway_jax.training.tasks import fold_constant_inputs

    conv = nn.Conv(16, (3, 3), padding=1)
    rng = np.random.default_rng(0)
    params9 = {"kernel": rng.normal(size=(3, 3, 9, 16)), "bias": rng.normal(size=16)}
    params9 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), params9)
    constants = np.concatenate([[1.0], rng.normal(size=4)]).astype(np.float32)
    folded = fold_constant_inputs(params9, constants)
    x = rng.normal(size=(1, 16, 16, 4)).astype(np.float32)
    full = conv.apply({"params": params9}, np.concatenate([x, np.broadcast_to(constants, (1, 16, 16, 5))], -1))
    mine = conv.apply({"params": folded}, x)
    np.testing.assert_allclose(np.asarray(mine)[:, 1:-1, 1:-1], np.asarray(full)[:, 1:-1, 1:-1], atol=2e-5)
    assert np.abs(np.asarray(mine)[:, 0] - np.asarray(full)[:, 0]).max() > 1e-3  # the border is not exact


def test_the_mask_recipe_masks_everything_in_its_share_only():
    from clipaway_jax.mini.batches import MaskRecipe, decode, training_mask
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render

    scenes = [example(render(0, i, 32), i) for i in range(8)]
    draw = lambda recipe, i: training_mask(scenes[i % 8], np.random.default_rng([3, i]), 32, recipe)
    assert 0.18 < np.mean([draw(MaskRecipe(whole=0.25), i).all() for i in range(400)]) < 0.32
    default = [draw(MaskRecipe(), i) for i in range(40)]
    assert not any(m.all() for m in default)
    own = [np.array_equal(m, decode(scenes[i % 8]["mask"], "L") >= 128) for i, m in enumerate(default)]
    assert 3 <= sum(own) <= 30  # half are the object's mask, a third of those undilated

def test_moved_off_masks_keep_the_silhouette_and_leave_the_object_uncovered():
    from clipaway_jax.mini.batches import MaskRecipe, decode, grown, moved_off, training_mask
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render

    small = [s for s in (render(0, i, 64) for i in range(40)) if s.area < 0.1][:6]
    assert len(small) >= 4
    for i, scene in enumerate(small):
        mask = scene.mask >= 128
        moved = moved_off(mask, np.random.default_rng([1, i]))
        assert (moved * mask).sum() <= 0.1 * mask.sum()  # the object is not under it
        sizes = [grown(mask, p).sum() for p in range(3)]
        assert min(sizes) <= moved.sum() <= max(sizes)  # the object's silhouette, dilated 0-2 px
        again = moved_off(mask, np.random.default_rng([1, i]))
        np.testing.assert_array_equal(moved, again)  # seeded: a resumed run sees the same masks
    scenes = [example(s, i) for i, s in enumerate(small)]
    recipe = MaskRecipe(object=0.0, elsewhere=1.0)
    for i, ex in enumerate(scenes):
        mask = decode(ex["mask"], "L") >= 128
        assert (training_mask(ex, np.random.default_rng(i), 64, recipe) * mask).sum() <= 0.1 * mask.sum()
    huge = np.ones((16, 16), bool)  # no room anywhere: the least overlapping try, still a mask
    assert moved_off(huge, np.random.default_rng(0)).all()


def test_placed_masks_land_in_one_piece_instead_of_wrapping():
    """`wrap=False`: the moved silhouette is not split across opposite borders (the wrapped shift splits most
    of them), it still leaves the object uncovered, and the recipe's share of masks draws it."""
    from clipaway_jax.mini.batches import MaskRecipe, grown, moved_off, training_mask
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render

    split = lambda m: bool((m[0].any() and m[-1].any()) or (m[:, 0].any() and m[:, -1].any()))
    scenes = [s for s in (render(0, i, 64) for i in range(60)) if 0.02 < s.area < 0.15][:12]
    assert len(scenes) >= 8
    wrapped, placed = [], []
    for i, scene in enumerate(scenes):
        mask = scene.mask >= 128
        wrapped.append(moved_off(mask, np.random.default_rng([1, i])))
        moved = moved_off(mask, np.random.default_rng([1, i]), wrap=False)
        placed.append(moved)
        assert (moved * mask).sum() <= 0.1 * mask.sum()  # the object is not under it
        assert 0.3 * grown(mask, 0).sum() <= moved.sum() <= grown(mask, 2).sum()  # at most a third cut off
        np.testing.assert_array_equal(moved, moved_off(mask, np.random.default_rng([1, i]), wrap=False))
    assert not any(split(m) for m in placed)
    assert sum(split(m) for m in wrapped) >= len(scenes) // 3
    recipe = MaskRecipe(object=0.0, elsewhere=1.0, wrap=False)
    rng = np.random.default_rng(5)
    rng.random(), rng.random()  # training_mask's two draws: not the object's mask, the moved one
    expected = moved_off(scenes[0].mask >= 128, rng, wrap=False)
    np.testing.assert_array_equal(training_mask(example(scenes[0], 0), np.random.default_rng(5), 64, recipe), expected)


def test_overlap_masks_hide_part_of_an_object_as_a_removals_target_does():
    """`overlap`: that share of the moved silhouettes lands in one piece over 10-50% of one of the scene's
    objects (the hidden part the fill must continue); the other kinds of mask keep their draws."""
    from clipaway_jax.mini.batches import MaskRecipe, decode, grown, over_object, training_mask
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render

    scenes = [example(render(0, i, 64), i) for i in range(16)]
    hits = 0
    for i, ex in enumerate(scenes):
        mask, objects = decode(ex["mask"], "L") >= 128, decode(ex["objects"], "L")
        placed = over_object(mask, objects, np.random.default_rng([2, i]))
        shares = [(placed * (objects == k)).sum() / (objects == k).sum() for k in np.unique(objects[objects > 0])]
        hits += any(0.1 <= s <= 0.5 for s in shares)
        assert 0.3 * mask.sum() <= placed.sum() <= grown(mask, 2).sum()  # the silhouette, in one piece
        np.testing.assert_array_equal(placed, over_object(mask, objects, np.random.default_rng([2, i])))
    assert hits >= 12  # a too small or too large object falls back to the nearest try
    bare = over_object(decode(scenes[0]["mask"], "L") >= 128, np.zeros((64, 64), np.uint8), np.random.default_rng(0))
    assert bare.any()
    strokes, still = MaskRecipe(object=0.0), MaskRecipe(object=0.0, overlap=1.0)  # no moved silhouettes to place
    for i, ex in enumerate(scenes):
        np.testing.assert_array_equal(training_mask(ex, np.random.default_rng(i), 64, strokes),
                                      training_mask(ex, np.random.default_rng(i), 64, still))  # fmt: skip
    rng = np.random.default_rng(3)
    rng.random(), rng.random(), rng.random()  # not the object's mask, the moved one, over an object
    expected = over_object(decode(scenes[1]["mask"], "L") >= 128, decode(scenes[1]["objects"], "L"), rng)
    recipe = MaskRecipe(object=0.0, elsewhere=1.0, overlap=1.0)
    np.testing.assert_array_equal(training_mask(scenes[1], np.random.default_rng(3), 64, recipe), expected)


def test_object_aware_masks_hide_no_object_and_keep_the_draws_otherwise():
    """`spare_objects`: the drawn mask leaves out each object it would hide more than that share of (with a 1 px
    ring); whole masks stay whole, empty scenes keep the drawn mask, a mask over bare texture is unchanged, and
    data without the objects map is refused with what to do."""
    from clipaway_jax.mini.batches import MaskRecipe, decode, grown, training_mask
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render

    scenes = [example(render(0, i, 64), i) for i in range(24)]
    plain, aware = MaskRecipe(object=0.0, random_area=(0.3, 0.5)), MaskRecipe(object=0.0, random_area=(0.3, 0.5),
                                                                              spare_objects=0.5)  # fmt: skip
    changed = 0
    for i, ex in enumerate(scenes):
        drawn = training_mask(ex, np.random.default_rng(i), 64, plain)
        mask = training_mask(ex, np.random.default_rng(i), 64, aware)
        objects = decode(ex["objects"], "L")
        assert mask.dtype == np.float32 and np.all(mask <= drawn)  # only ever takes pixels out
        for k in np.unique(objects[objects > 0]):
            assert (mask * (objects == k)).sum() <= 0.5 * (objects == k).sum()  # no object more than half hidden
        if not np.array_equal(mask, drawn):
            changed += 1
            near_objects = grown(objects > 0, 1) > 0  # the objects and their 1 px ring
            np.testing.assert_array_equal(mask[~near_objects], drawn[~near_objects])  # bare texture: as drawn
        np.testing.assert_array_equal(training_mask(ex, np.random.default_rng(i), 64, aware, empty=True), drawn)
    assert 4 <= changed < len(scenes)
    assert training_mask(scenes[0], np.random.default_rng(0), 64, MaskRecipe(whole=1.0, spare_objects=0.5)).all()
    old = {k: v for k, v in scenes[0].items() if k != "objects"}
    with pytest.raises(ValueError, match="objects.*data scenes"):
        training_mask(old, np.random.default_rng(0), 64, aware)


def test_empty_scenes_replace_their_share_of_the_images_with_a_fresh_texture(monkeypatch):
    """`empty_p`: that share of the inpainting examples is a new texture of the scene's kind with nothing on
    it, captioned with the kind; at 0 the loader draws exactly what it drew before the option existed."""
    from clipaway_jax.mini import batches
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render

    captions = RecordedTokens()
    monkeypatch.setattr(batches, "Tokens", lambda tokenizer: captions)
    scenes = [render(0, i, 32) for i in range(6)]
    source = [example(s, i) for i, s in enumerate(scenes)]
    caption_all = batches.InpaintRecipe(caption=1.0)
    plain = batches.inpaint_loader(source, None, 0, caption_all)(np.arange(6))
    assert captions == [s.scene_caption for s in scenes]
    captions.clear()
    empty = batches.inpaint_loader(source, None, 0, dataclasses.replace(caption_all, empty=1.0))(np.arange(6))
    assert captions == [s.background_kind for s in scenes]
    for scene, image in zip(scenes, empty["images"]):
        assert not np.allclose(image, scene.image / 255.0, atol=0.05)  # not the scene
        assert not np.allclose(image, scene.background / 255.0, atol=0.05)  # nor its ground truth
    zero = batches.inpaint_loader(source, None, 0, dataclasses.replace(caption_all, empty=0.0))(np.arange(6))
    for key in plain:
        np.testing.assert_array_equal(plain[key], zero[key])


class RecordedTokens(list):
    """A tokenizer stand-in for contrastive pairs that keeps the captions it is given."""

    def __call__(self, words):
        self.append(words)
        return np.zeros(77, np.int32)


def test_background_pairs_put_a_fresh_texture_under_the_objects_mask():
    from clipaway_jax.mini.batches import PairRecipe, contrastive_pair, decode
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render

    scene = render(0, 5, 32)
    captions = RecordedTokens()
    pixels, alpha, _ = contrastive_pair(example(scene, 5), np.random.default_rng(0), captions, True, PairRecipe(1.0))
    np.testing.assert_array_equal(alpha, decode(example(scene, 5)["mask"], "L") >= 128)
    assert pixels.shape == (32, 32, 3) and not np.allclose(pixels, scene.background / 255.0, atol=0.02)
    assert scene.background_kind in captions[0] and scene.target.shape not in captions[0]


def test_shape_captions_name_the_objects_shape_alone():
    from clipaway_jax.mini.batches import PairRecipe, contrastive_pair
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import COLOURS, render

    scene = render(0, 5, 32)
    captions = RecordedTokens()
    for i in range(60):
        contrastive_pair(example(scene, 5), np.random.default_rng(i), captions, True, PairRecipe(shape=1.0))
    named = [c for c in captions if scene.target.shape in c and " on " not in c]  # the object's own pairs
    assert len(named) > 15 and not any(colour in c for c in named for colour in COLOURS)
    captions.clear()
    for i in range(60):
        contrastive_pair(example(scene, 5), np.random.default_rng(i), captions, True)
    assert any(scene.target.colour in c and " on " not in c for c in captions)  # default: colour and shape


def test_class_pairs_name_the_class_they_show_and_leave_the_default_pairs_as_they_were():
    from clipaway_jax.mini.batches import PairRecipe, contrastive_pair
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import BACKGROUNDS, COLOURS, SHAPES, render

    labels = [f"{c} {s}" for s in SHAPES for c in COLOURS] + list(BACKGROUNDS)
    classes = {label: i for i, label in enumerate(labels)}
    scene = render(0, 5, 32)
    image, mask = scene.image / 255.0, (scene.mask >= 128).astype(np.float32)
    target, background = classes[f"{scene.target.colour} {scene.target.shape}"], classes[scene.background_kind]
    seen = set()
    for i in range(40):
        plain = contrastive_pair(example(scene, 5), np.random.default_rng(i), RecordedTokens(), True, PairRecipe(0.3))
        *pair, index = contrastive_pair(example(scene, 5), np.random.default_rng(i), RecordedTokens(), True,
                                        PairRecipe(0.3), classes)  # fmt: skip
        for a, b in zip(plain, pair, strict=True):  # the same draws: the class rides along
            np.testing.assert_array_equal(a, b)
        pixels, alpha, _ = pair
        the_scene = np.allclose(pixels, image, atol=1e-6)
        if np.array_equal(alpha, mask):  # under the object's mask: the object, or a fresh background texture
            assert index == (target if the_scene else background)
        elif np.all(alpha == 1) and not the_scene:  # the object's box crop
            assert index == target
        else:  # the rest (alpha = 1 - mask) and the whole scene: no one class
            assert index == -1
        seen.add(index)
    assert seen == {-1, target, background}


def test_pair_kinds_weigh_the_draw_and_equal_weights_keep_the_old_one():
    from clipaway_jax.mini.batches import pair_kind

    draws = lambda weights: [pair_kind(np.random.default_rng(i), weights) for i in range(400)]
    assert draws((1.0,) * 4) == [int(np.random.default_rng(i).integers(4)) for i in range(400)]
    assert set(draws((0.0, 0.0, 0.0, 1.0))) == {3}
    counts = np.bincount(draws((4.0, 1.0, 1.0, 2.0)), minlength=4) / 400
    np.testing.assert_allclose(counts, [0.5, 0.125, 0.125, 0.25], atol=0.07)


def test_the_class_term_is_the_cross_entropy_of_the_pairs_with_a_class():
    from clipaway_jax.training.pretrain import _class_term

    logits = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    index = np.array([2, -1, 5, -1], np.int32)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(_class_term(logits, index), -(log_p[0, 2] + log_p[2, 5]) / 2, rtol=1e-6)
    assert float(_class_term(logits, np.full(4, -1, np.int32))) == 0.0


def test_vision_only_continues_the_vision_tower_against_its_frozen_text_and_the_classes(world, tmp_path):
    from clipaway_jax.checkpoint import load_checkpoint

    root, frozen = world
    out = tmp_path / "exported"
    extra = ["--config.vision_only=True", "--config.class_weight=1.0", "--config.steps=3", "--export", str(out)]
    assert cli_main(_args("alpha-clip", frozen, root, tmp_path / "run", *PLAIN_OPTIMIZER, *extra)) == 0
    before, after = load_checkpoint(frozen), load_checkpoint(out)
    leaves = lambda name: zip(*(jax.tree_util.tree_leaves(c.params[name]) for c in (before, after)), strict=True)
    same = lambda name: all(np.array_equal(a, b) for a, b in leaves(name))
    assert same("text_encoder") and not same("alpha_clip")  # the text tower (the SD text encoder) is kept
    entry = after.manifest["networks"]["alpha_clip"]
    assert entry["training"]["vision_only"] and entry["logit_scale"] != 2.0  # the temperature continued
    assert after.manifest["networks"]["text_encoder"]["logit_scale"] == 2.0
    with pytest.raises(ValueError, match="class_weight needs vision_only"):
        from clipaway_jax.commands.train import TASKS, train_config

        config = _config("alpha-clip", frozen, root, "--config.class_weight=1.0")
        TASKS["alpha-clip"](config, tmp_path, train_config(config))


def test_decoder_only_trains_the_vaes_decoder_and_keeps_its_latent_space(world, tmp_path):
    """`decoder_only`: the trained VAE continues with its encoder frozen (every UNet reads its latents), the
    whole VAE is exported, and the manifest keeps the record of the stage it continues."""
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.commands.train import DECODER_MODULES, TASKS, train_config

    root, frozen = world
    out = tmp_path / "exported"
    extra = ["--config.decoder_only=True", "--config.latent_noise=0.2", "--config.steps=3", "--export", str(out)]
    assert cli_main(_args("vae", frozen, root, tmp_path / "run", *PLAIN_OPTIMIZER, *extra)) == 0
    before, after = load_checkpoint(frozen), load_checkpoint(out)
    for module in before.params["vae"]:
        pairs = zip(*(jax.tree_util.tree_leaves(c.params["vae"][module]) for c in (before, after)), strict=True)
        assert all(np.array_equal(a, b) for a, b in pairs) == (module not in DECODER_MODULES), module
    entry, old = after.manifest["networks"]["vae"], before.manifest["networks"]["vae"]
    assert entry["config"] == old["config"] and entry["training"]["decoder_only"]  # scaling_factor kept
    config = _config("vae", out, root, "--config.decoder_only=True")
    again = TASKS["vae"](config, tmp_path / "again", train_config(config))
    assert again.entries["vae"]["continues"] == [entry["training"]]  # a second continuation keeps the first
    assert sorted(again.params["vae"]) == sorted(DECODER_MODULES)
    untrained = _config("vae", root / "skeleton", root, "--config.decoder_only=True")
    with pytest.raises(ValueError, match="decoder_only continues a trained 'vae'"):
        TASKS["vae"](untrained, tmp_path, train_config(untrained))
    fresh = _config("vae", frozen, root, "--config.latent_noise=0.1")
    with pytest.raises(ValueError, match="latent_noise needs decoder_only"):
        TASKS["vae"](fresh, tmp_path, train_config(fresh))


def test_latent_noise_perturbs_the_decoded_latents_only_when_asked(world):
    import jax.numpy as jnp

    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.training.pretrain import vae_loss

    root, frozen = world
    ckpt = load_checkpoint(frozen, networks=["vae"])
    vae, params = ckpt.module("vae"), {"vae": ckpt.params["vae"]}
    batch = {"images": np.random.default_rng(0).random((2, SIZE, SIZE, 3), np.float32)}
    key = jax.random.key(0)
    plain, noisy = (float(vae_loss(vae, latent_noise=n)(params, None, batch, key)) for n in (0.0, 0.5))
    posterior = vae.apply({"params": params["vae"]}, batch["images"] * 2 - 1, method="encode")
    x = batch["images"] * 2 - 1
    error = x - vae.apply({"params": params["vae"]}, posterior.sample(key), method="decode")
    kl = 0.5 * jnp.sum(posterior.mean**2 + jnp.exp(posterior.logvar) - 1 - posterior.logvar) / x.size
    assert plain == pytest.approx(float(jnp.mean(jnp.abs(error)) + 1e-6 * kl), rel=1e-6)  # the key as before
    assert noisy != plain


def test_the_recipe_skips_a_stage_that_ran_and_runs_one_that_continues_a_trained_network(tmp_path):
    """alpha-clip-classes continues the alpha_clip that alpha-clip trained: trained alone does not make it done."""
    from clipaway_jax.mini.recipe import record

    done = lambda checkpoint, stage: record(checkpoint, stage) is not None
    def manifest(**last):  # network -> the config file that last trained it
        entries = {n: {"trained": True, "training": {"config_file": f"/r/train/configs/{f}"}} for n, f in last.items()}
        (tmp_path / "manifest.json").write_text(json.dumps({"networks": {**entries, "vae": {"trained": False}}}))
        return tmp_path

    stage1 = manifest(alpha_clip="mini_alpha_clip.py", text_encoder="mini_alpha_clip.py")
    assert done(stage1, "alpha-clip") and not done(stage1, "alpha-clip-classes") and not done(stage1, "vae")
    both = manifest(alpha_clip="mini_alpha_clip_classes.py", text_encoder="mini_alpha_clip.py")
    assert done(both, "alpha-clip") and done(both, "alpha-clip-classes")
    assert not done(manifest(text_encoder="mini_alpha_clip.py"), "alpha-clip")  # alpha_clip not trained


def test_the_recipe_trains_again_every_stage_after_one_that_ran(tmp_path, monkeypatch):
    """An OUT made before a stage was added: the new stage runs, and so does every later one (the MLP read the
    AlphaCLIP before it), from a clean workdir, while the stages before it are kept."""
    from clipaway_jax.mini import recipe
    from clipaway_jax.mini.dataset import VERSION

    out = tmp_path / "out"
    (out / "data" / "mini_scenes" / VERSION).mkdir(parents=True)
    last = {"alpha_clip": "mini_alpha_clip.py", "text_encoder": "mini_alpha_clip.py", "mlp": "mini_mlp.py"}
    entries = {n: {"trained": True, "training": {"config_file": f"/r/{f}"}} for n, f in last.items()}
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "manifest.json").write_text(json.dumps({"networks": entries}))
    (out / "runs" / "mlp").mkdir(parents=True)  # the finished MLP run of the old OUT
    ran = []

    def train(argv):  # the stage exports its networks, trained by its config file
        config = Path(argv[argv.index("--config") + 1])
        stage = next(s for s, (_, f) in recipe.STAGES.items() if f == config.name)
        ran.append((stage, Path(argv[argv.index("--workdir") + 1]).exists()))
        manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
        for n in recipe.STAGES[stage][0]:
            manifest["networks"][n] = {"trained": True, "training": {"config_file": str(config)}}
        (out / "checkpoint" / "manifest.json").write_text(json.dumps(manifest))

    monkeypatch.setattr(recipe, "run", train)
    recipe.train_all(out, stages=("alpha-clip", "alpha-clip-classes", "mlp"))
    assert ran == [("alpha-clip-classes", False), ("mlp", False)]  # the old MLP run was cleared, not resumed
    recipe.train_all(out, stages=("alpha-clip", "alpha-clip-classes", "mlp"))
    assert len(ran) == 2  # all done now


def test_the_recipe_trains_again_a_stage_whose_config_changed_and_resumes_one_stopped_with_the_same(
    tmp_path, monkeypatch, capsys
):
    """A config file edited after its stage ran (here the VAE's steps) makes the stage run again, from a clean
    workdir (the finished run of the old settings is not continued); a stage stopped midway with the
    current settings continues its workdir; a record without a field added since is not a change."""
    from clipaway_jax.mini import recipe
    from clipaway_jax.mini.dataset import VERSION

    out = tmp_path / "out"
    (out / "data" / "mini_scenes" / VERSION).mkdir(parents=True)
    settings = {s: recipe.stage_settings(CONFIGS / recipe.STAGES[s][1], 0, 1.0) for s in ("image-encoder", "vae")}
    older = json.loads(json.dumps(settings["image-encoder"]))
    del older["inpaint_masks"]["spare_objects"]  # recorded before the field existed
    old_vae = {**settings["vae"], "steps": settings["vae"]["steps"] // 2}
    entries = {"image_encoder": {"trained": True, "training": older}, "vae": {"trained": True, "training": old_vae}}
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "manifest.json").write_text(json.dumps({"networks": entries}))
    (out / "runs" / "vae").mkdir(parents=True)  # the old VAE run, finished
    (out / "runs" / "vae" / "config.json").write_text(json.dumps(old_vae))
    ran = []
    monkeypatch.setattr(recipe, "run", lambda argv: ran.append(Path(argv[argv.index("--workdir") + 1]).exists()))
    recipe.train_all(out, stages=("image-encoder", "vae"))
    assert ran == [False]  # the VAE alone, its old workdir cleared
    steps = settings["vae"]["steps"]
    assert f"[vae] trained with other settings (steps: {steps // 2} -> {steps})" in capsys.readouterr().out
    (out / "runs" / "vae").mkdir()  # stopped midway with the current settings
    (out / "runs" / "vae" / "config.json").write_text(json.dumps(settings["vae"]))
    recipe.train_all(out, stages=("image-encoder", "vae"))
    assert ran == [False, True]  # continued


def test_a_continuing_stage_that_trains_again_starts_from_the_stage_it_continues(tmp_path, monkeypatch, capsys):
    """alpha-clip-classes continues alpha_clip: its record is the network's latest, alpha-clip's stays under
    `continues` (done); when the class stage's config changed, the checkpoint's alpha_clip is already its own
    output, so alpha-clip runs again first (its finished workdir of the same settings is resumed, not cleared)."""
    from clipaway_jax.mini import recipe
    from clipaway_jax.mini.dataset import VERSION

    out = tmp_path / "out"
    (out / "data" / "mini_scenes" / VERSION).mkdir(parents=True)
    stages = ("alpha-clip", "alpha-clip-classes")
    settings = {s: recipe.stage_settings(CONFIGS / recipe.STAGES[s][1], 0, 1.0) for s in stages}
    first, classes = settings["alpha-clip"], settings["alpha-clip-classes"]
    entries = {"alpha_clip": {"trained": True, "training": classes, "continues": [first]},
               "text_encoder": {"trained": True, "training": {**first, "config_file": "/r/other.py"}}}
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "manifest.json").write_text(json.dumps({"networks": entries}))
    assert recipe.record(out / "checkpoint", "alpha-clip") == first  # found under `continues`
    ran = []
    monkeypatch.setattr(recipe, "run", lambda argv: ran.append((Path(argv[argv.index("--config") + 1]).name,
                                                                Path(argv[argv.index("--workdir") + 1]).exists())))
    recipe.train_all(out, stages=stages)
    assert ran == []  # both done
    (out / "runs" / "alpha-clip").mkdir(parents=True)  # its finished run
    (out / "runs" / "alpha-clip" / "config.json").write_text(json.dumps(first))
    entries["alpha_clip"]["training"] = {**classes, "steps": classes["steps"] // 2}
    (out / "checkpoint" / "manifest.json").write_text(json.dumps({"networks": entries}))
    recipe.train_all(out, stages=stages)
    assert ran == [("mini_alpha_clip.py", True), ("mini_alpha_clip_classes.py", False)]
    assert "[alpha-clip] trained as set, again: alpha-clip-classes continues" in capsys.readouterr().out


def test_the_shipped_set_is_what_the_committed_stage_configs_make():
    """Every stage's record in the shipped manifest matches its config file as committed (paths aside), so
    `make mini` on the shipped set trains nothing; the vae stage's record is kept under the vae-decoder's,
    which continued the same network. A stage config edited without shipping its set again fails here."""
    from clipaway_jax.mini import recipe
    from clipaway_jax.mini.shipped import SHIPPED

    stages = tuple(recipe.STAGES)
    settings = {s: recipe.stage_settings(CONFIGS / recipe.STAGES[s][1], 0, 1.0) for s in stages}
    assert recipe.first_to_run(SHIPPED, stages, settings) == len(stages)
    vae = recipe.networks(SHIPPED)["vae"]
    assert vae["training"] == recipe.record(SHIPPED, "vae-decoder")
    assert vae["continues"][0] == recipe.record(SHIPPED, "vae")


def test_the_recipe_names_its_config_files_as_the_working_directory_sees_them(tmp_path, monkeypatch):
    """The manifest records `--config` as given: from the repository (`make mini`) train/configs/..., not the
    clone's absolute path; from elsewhere, the absolute path (still a file that exists)."""
    from clipaway_jax.mini import recipe

    monkeypatch.chdir(CONFIGS.parents[1])
    assert recipe.as_given(recipe.CONFIGS / "mini_vae.py") == "train/configs/mini_vae.py"
    monkeypatch.chdir(tmp_path)
    assert recipe.as_given(recipe.CONFIGS / "mini_vae.py") == str(CONFIGS / "mini_vae.py")


def test_the_recipe_runs_its_stages_with_glibcs_malloc_tunables_unless_the_user_set_some(monkeypatch):
    """Each stage's process gets MALLOC_TUNABLES (huge pages for XLA:CPU's per-step temporaries); a
    GLIBC_TUNABLES of the user's own wins."""
    import subprocess
    from types import SimpleNamespace

    from clipaway_jax.mini import recipe

    seen = []
    monkeypatch.setattr(subprocess, "run", lambda argv, env: seen.append(env) or SimpleNamespace(returncode=0))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    recipe.run(["--help"])
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    recipe.run(["--help"])
    assert [env["GLIBC_TUNABLES"] for env in seen] == [recipe.MALLOC_TUNABLES, "glibc.malloc.arena_max=2"]
    assert "glibc.malloc.hugetlb=1" in recipe.MALLOC_TUNABLES.split(":")


@pytest.mark.slow  # 2 min of compiles; `make test` keeps its unit parts (test_dcgd, the cached-latents test)
def test_eight_latent_channels_train_and_remove_with_every_base(world, tmp_path):
    """A VAE of 8 latent channels (the mini world's option for a finer latent): the UNets take 17
    (inpainting), 24 (DCGD) and 8 (text-to-image) channels; each task's loss runs and each base removes."""
    from clipaway_jax.commands import train
    from clipaway_jax.models.dcgd import unet_kind
    from clipaway_jax.models.unet import UNetConfig
    from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions

    root, frozen = world
    manifest = json.loads((frozen / "manifest.json").read_text())
    init = manifest["init"]
    init["vae"]["config"] = dict(init["vae"]["config"], latent_channels=8)
    init["unet"]["config"] = dict(init["unet"]["config"], in_channels=17, out_channels=8)
    assert unet_kind(UNetConfig.from_dict(init["unet"]["config"])) == "inpaint"
    names = ("vae", "unet", "image_proj", "mlp")
    init["mlp"]["config"] = dict(init["mlp"]["config"], alpha_clip_embed_dim=16, ip_adapter_embed_dim=24)
    ckpt = tmp_path / "eight"
    train.export(frozen, ckpt, {n: train.init_params(init[n], i) for i, n in enumerate(names)},
                 {n: init[n] for n in names})  # fmt: skip
    manifest = json.loads((ckpt / "manifest.json").read_text())
    (ckpt / "manifest.json").write_text(json.dumps({**manifest, "init": init}))
    for task, extra in (("inpaint", []), ("unet", ["--config.unet_variant=dcgd12", "--config.captions=True"]),
                        ("t2i", [])):  # fmt: skip
        stage = {"inpaint": "inpaint", "unet": "inpaint", "t2i": "t2i"}[task]
        config = _config(stage, ckpt, root, f"--config.task={task}", *extra)
        made = train.TASKS[task](config, tmp_path / task, train.train_config(config))
        loss = jax.jit(made.loss)(made.params, made.frozen, made.load(np.arange(2)), jax.random.key(0))
        assert np.isfinite(float(loss)), task
        if task != "inpaint":
            train.export(ckpt, ckpt, made.params, made.entries)
    channels = {n: e["config"]["in_channels"] for n, e in json.loads((ckpt / "manifest.json").read_text())
                ["networks"].items() if n.startswith("unet")}  # fmt: skip
    assert channels == {"unet": 17, "unet_dcgd12": 24, "unet_t2i": 8}
    images = np.random.default_rng(0).random((1, SIZE, SIZE, 3)).astype(np.float32)
    masks = np.zeros((1, SIZE, SIZE), np.float32)
    masks[:, 8:20, 8:24] = 1
    for unet, base in (("unet", "inpaint"), ("unet_dcgd12", "inpaint"), ("unet_t2i", "blended")):
        pipe = CLIPAwayPipeline.from_checkpoint(ckpt, unet=unet)
        options = RemovalOptions(steps=2, scheduler="ddim", dilate_iterations=0, base=base)
        out = np.asarray(pipe.remove(images, masks, options=options))
        assert out.shape == images.shape and np.isfinite(out).all(), unet


@pytest.mark.parametrize("task", ["inpaint", "t2i", "unet"])
def test_cached_latents_give_the_loss_of_the_uncached_step(world, with_unet, task, tmp_path):
    """`cache_latents`: the VAE posteriors (and image embeddings) of every example under its seeded mask,
    once; the step samples from them. Same loss as encoding in the step (same key, same draws), no
    images in the batch, and a cache made for another setting is refused."""
    from clipaway_jax.commands import train

    root, frozen = world
    checkpoint = frozen if task == "inpaint" else with_unet
    extra = [f"--config.task={task}"] + (["--config.unet_variant=dcgd12", "--config.captions=True"]
                                         if task == "unet" else [])  # fmt: skip
    stage = "t2i" if task == "t2i" else "inpaint"
    made = {}
    for cached in (False, True):
        config = _config(stage, checkpoint, root, *extra, f"--config.cache_latents={cached}")
        made[cached] = train.TASKS[task](config, tmp_path / "run", train.train_config(config))
    indices = np.array([5, 0, 17, 3])
    batches = {cached: made[cached].load(indices) for cached in made}
    assert "images" in batches[False] and "images" not in batches[True]
    np.testing.assert_array_equal(batches[True]["masks"], batches[False]["masks"])
    loss = {c: float(jax.jit(m.loss)(m.params, m.frozen, batches[c], jax.random.key(3))) for c, m in made.items()}
    assert loss[True] == pytest.approx(loss[False], rel=1e-5), loss
    config = _config(stage, checkpoint, root, *extra, "--config.cache_latents=True", "--config.seed=1")
    with pytest.raises(ValueError, match="remove it to cache again"):
        train.TASKS[task](config, tmp_path / "run", train.train_config(config))


def test_the_anchor_holds_the_pairs_without_a_class_at_the_starting_embedding(world, tmp_path):
    from clipaway_jax.commands.train import TASKS, train_config

    root, frozen = world
    base = ["--config.vision_only=True", "--config.class_weight=1.0"]
    tasks = {}
    for weight in (0.0, 5.0):
        config = _config("alpha-clip", frozen, root, *base, f"--config.anchor_weight={weight}")
        tasks[weight] = TASKS["alpha-clip"](config, tmp_path, train_config(config))
    batch = tasks[0.0].load(np.arange(8))
    assert (batch["class_index"] < 0).any()
    loss = lambda w, params: float(tasks[w].loss(params, tasks[w].frozen, batch, jax.random.key(0)))
    start = tasks[5.0].params
    assert loss(5.0, start) == pytest.approx(loss(0.0, start), abs=1e-6)  # at the start it costs nothing
    moved = {**start, "alpha_clip": jax.tree_util.tree_map(lambda x: x * 1.5, start["alpha_clip"])}
    assert loss(5.0, moved) > loss(0.0, moved) + 1e-3
    with pytest.raises(ValueError, match="anchor_weight needs class_weight"):
        config = _config("alpha-clip", frozen, root, "--config.vision_only=True", "--config.anchor_weight=1.0")
        TASKS["alpha-clip"](config, tmp_path, train_config(config))


@pytest.mark.parametrize("kind", ["pairs", "inpainting"])
def test_kept_examples_equal_fresh_loads_in_any_order(kind, monkeypatch):
    """The loaders seed an example's randomness by its index, so the same example comes out at every call:
    `KeptLoader` (what train uses past one epoch) is exact, whatever batches the indices come in; over its
    budget it keeps nothing."""
    from clipaway_jax.mini import batches
    from clipaway_jax.mini.dataset import example
    from clipaway_jax.mini.scenes import render
    from clipaway_jax.training.data import KeptLoader

    words = lambda caption: np.frombuffer(caption.ljust(80).encode()[:80], np.int32)  # a tokenizer stand-in
    monkeypatch.setattr(batches, "Tokens", lambda tokenizer: words)
    source = [example(render(0, i, 32), i) for i in range(8)]
    if kind == "pairs":
        load = batches.contrastive_loader(source, None, 0, True, batches.PairRecipe(0.2, kinds=(4.0, 1.0, 1.0, 2.0)))
    else:
        load = batches.inpaint_loader(source, None, 0)
    kept, passing = KeptLoader(load, len(source), budget=1 << 30), KeptLoader(load, len(source), budget=1)
    for indices in ([5, 3, 7, 3], [7, 1, 5, 2], [2, 3, 5, 7]):
        fresh = load(np.array(indices))
        for loader in (kept, passing):
            got = loader(np.array(indices))
            assert sorted(got) == sorted(fresh)
            for name in fresh:
                np.testing.assert_array_equal(got[name], fresh[name], err_msg=name)
    assert kept.filled.sum() == 5 and passing.arrays is None
