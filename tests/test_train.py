"""Training: the MLP learns on a real tfds folder dataset, resumes bit-exactly after kill -9, gives the
same loss on 8 devices (FSDP) as on one and across two processes; the UNet fine-tune step learns."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from clipaway_jax.cli import main as cli_main


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train") / "images"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(16):
        Image.fromarray(rng.randint(0, 256, (48, 48, 3), np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


MLP_CONFIG = Path(__file__).resolve().parent.parent / "train" / "configs" / "clipaway_mlp.py"


def _args(checkpoint, images, workdir, *extra):
    """The published MLP run's config on the tiny towers and 16 images (cached embeddings, as published)."""
    return ["train", "--config", str(MLP_CONFIG), "--workdir", str(workdir), f"--config.checkpoint={checkpoint}",
            f"--config.images={images}", "--config.learning_rate=1e-3", "--config.log_every=1", *extra]  # fmt: skip


def _metrics(workdir):
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "loss" in r}, records


def _spawn(args, devices=1, env=None):
    full_env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    full_env.update(env or {})
    script = "import sys; from clipaway_jax.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _final_params(workdir, step):
    with ocp.CheckpointManager((workdir / "checkpoints").absolute()) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.tree_util.tree_leaves(restored["state"]["params"])


def test_mlp_loss_decreases_and_exports(tiny_checkpoint, images, tmp_path):
    work, exported = tmp_path / "run", tmp_path / "exported"
    assert cli_main(_args(tiny_checkpoint, images, work, "--config.steps=100", "--export", str(exported))) == 0
    losses, records = _metrics(work)
    assert losses[100]["loss"] < 0.5 * losses[1]["loss"], (losses[1]["loss"], losses[100]["loss"])
    assert {"compiled", "param_sharding"} <= {r.get("event") for r in records}
    assert (work / "embeddings" / "manifest.json").is_file()
    assert list((work / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard event files"
    assert {"lr", "grad_norm", "steps_per_s", "examples_per_s"} <= set(losses[100])
    from clipaway_jax.checkpoint import load_checkpoint

    entry = load_checkpoint(exported).manifest["networks"]["mlp"]
    assert entry["trained"] is True
    # the run's resolved config: in its workdir and beside the network it trained, overrides applied
    written = json.loads((work / "config.json").read_text())
    assert entry["training"] == written and written["config_file"] == str(MLP_CONFIG)
    assert (written["task"], written["steps"], written["learning_rate"], written["batch_size"]) == ("mlp", 100, 1e-3, 8)


def test_resume_after_kill_is_bit_exact(tiny_checkpoint, images, tmp_path):
    steps = ["--config.steps=40", "--config.save_every=5"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert cli_main(_args(tiny_checkpoint, images, straight, *steps)) == 0
    proc = _spawn(_args(tiny_checkpoint, images, killed, *steps, "--debug-step-sleep", "0.25"))
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoints" / "10").is_dir():
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = max(s for s in _metrics(killed)[0])
    assert 10 <= interrupted_at < 40, "the run should have been killed midway"
    assert cli_main(_args(tiny_checkpoint, images, killed, *steps)) == 0
    resumed = [r for r in _metrics(killed)[1] if r.get("event") == "resumed"]
    assert resumed and resumed[0]["step"] >= 10
    a, b = _metrics(straight)[0], _metrics(killed)[0]
    assert all(a[s]["loss"] == b[s]["loss"] for s in range(1, 41)), "loss sequence differs"
    for x, y in zip(_final_params(straight, 40), _final_params(killed, 40)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_eight_devices_fsdp_match_one_device(tiny_checkpoint, images, tmp_path):
    one, eight = tmp_path / "one", tmp_path / "eight"
    assert cli_main(_args(tiny_checkpoint, images, one, "--config.steps=5")) == 0
    proc = _spawn(_args(tiny_checkpoint, images, eight, "--config.steps=5", "--config.fsdp=8"), devices=8)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    l1, l8 = _metrics(one)[0], _metrics(eight)[0]
    from clipaway_jax.training.tasks import load_cache

    cached = [load_cache(w / "embeddings") for w in (one, eight)]  # 8-way split, padded batch
    for name, array in cached[0].items():
        np.testing.assert_allclose(cached[1][name], array, atol=1e-5 * max(1.0, float(np.abs(array).max())))
    assert abs(l1[5]["loss"] - l8[5]["loss"]) <= 1e-5 * max(1.0, abs(l1[5]["loss"]))
    sharding = next(r for r in _metrics(eight)[1] if r.get("event") == "param_sharding")
    assert sharding["mesh"] == {"data": 1, "fsdp": 8}
    # Dense kernels [in, out]: the output ("mlp") axis is split over fsdp; LayerNorm scales replicated
    assert "'fsdp'" in sharding["specs"]["mlp/layers_0/kernel"]
    assert "fsdp" not in sharding["specs"]["mlp/layers_1/scale"]


def test_a_diverging_run_stops_naming_the_step_and_keeps_its_last_checkpoint(tiny_checkpoint, images, tmp_path,
                                                                               capsys):  # fmt: skip
    work = tmp_path / "diverged"  # lr 1e30: step 1 is finite (params ~1e30), step 2's loss overflows
    assert cli_main(_args(tiny_checkpoint, images, work, "--config.steps=10", "--config.save_every=1",
                          "--config.learning_rate=1e30")) == 1  # fmt: skip
    error = capsys.readouterr().err
    steps = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and f"at step {steps[-1] + 1}" in error and "non-finite" in error, (steps, error)
    assert all(np.isfinite(np.asarray(x)).all() for x in _final_params(work, steps[-1]))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_and_the_checkpoint_restores_in_one(tiny_checkpoint, images, tmp_path):
    work, port = tmp_path / "multi", _free_port()
    procs = [_spawn(_args(tiny_checkpoint, images, work, "--config.steps=6", "--config.save_every=3", "--coordinator",
                          f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)), devices=4)
             for i in range(2)]  # fmt: skip
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
    assert (work / "checkpoints" / "6").is_dir()
    files = json.loads((work / "embeddings" / "manifest.json").read_text())["files"]
    assert files["alpha_embeds"] == [f"alpha_embeds.0000{i}-of-00002.npy" for i in range(2)], "one shard per process"
    assert cli_main(_args(tiny_checkpoint, images, work, "--config.steps=8", "--continue-changed")) == 0
    resumed = [r for r in _metrics(work)[1] if r.get("event") == "resumed"]
    assert resumed and resumed[-1]["step"] == 6


# One level (with the mid block): a UNet's backward pass compiles in about half the time of two levels.
MICRO_UNET = dict(block_out_channels=(16,), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
                  attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D",),
                  up_block_types=("CrossAttnUpBlock2D",), sample_size=8)  # fmt: skip


def _random_params(module):
    """Random params (standard deviation 0.2) of the module's shapes, drawn on the host: `jax.jit(module.init)`
    would compile one threefry program per parameter (~9 s for this micro UNet, against ~3 s for its forward)."""
    from flax.core.meta import unbox

    from clipaway_jax.models import abstract_params

    rng = np.random.default_rng(0)
    shapes = unbox(abstract_params(module))["params"]
    return jax.tree_util.tree_map(lambda a: (0.2 * rng.standard_normal(a.shape)).astype(a.dtype), shapes)


@pytest.mark.parametrize("variant", ["dcgd12"])  # the 9-channel case learns in test_mini_train (with IP-Adapter)
def test_unet_finetune_step_learns_on_a_fixed_batch(tiny_checkpoint, variant, tmp_path):
    """DCGD's 12-channel version of a small 9-channel UNet (compiles fast), with the tiny VAE/text encoder."""
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.models import UNet2DConditionModel, UNetConfig, abstract_params
    from clipaway_jax.models.dcgd import dcgd12_from_inpaint
    from clipaway_jax.sharding import REPLICATED, make_mesh
    from clipaway_jax.training.data import random_mask
    from clipaway_jax.training.tasks import unet_loss
    from clipaway_jax.training.trainer import TrainConfig, Trainer

    ckpt = load_checkpoint(tiny_checkpoint, networks=["vae", "text_encoder"])
    unet = UNet2DConditionModel(UNetConfig.from_dict(MICRO_UNET))
    params = _random_params(unet)
    if variant == "dcgd12":
        params, config = dcgd12_from_inpaint(params, unet.config)
        unet = UNet2DConditionModel(config)
    loss = unet_loss(unet, ckpt.module("vae"), ckpt.module("text_encoder"), ckpt.manifest["scheduler"])
    frozen = {n: {"params": ckpt.params[n]} for n in ("vae", "text_encoder")}
    cfg = TrainConfig(steps=6, global_batch=2, learning_rate=1e-3, weight_decay=0.0)
    abstract = {"params": {"unet": abstract_params(unet)["params"]}}
    trainer = Trainer(cfg, loss, abstract, {"unet": params}, tmp_path, make_mesh(), REPLICATED, frozen)
    rng = np.random.default_rng(0)
    batch = {"images": rng.random((2, 64, 64, 3), dtype=np.float32),
             "masks": np.stack([random_mask(np.random.default_rng(i), 64) for i in range(2)]),
             "text_ids": np.zeros((2, 77), np.int32)}  # fmt: skip
    before = trainer.train_step(batch)["loss"]  # step 0's noise and timesteps, initial params
    for _ in range(5):
        trainer.train_step(batch)
    # the same compiled step at step 0 again: step 0's noise and timesteps, trained params
    trainer.state = trainer.state.replace(step=jax.numpy.zeros_like(trainer.state.step))
    after = trainer.train_step(batch)["loss"]
    assert after < before, (before, after)


def test_random_masks_are_seeded_and_cover_the_requested_area():
    from clipaway_jax.training.data import random_mask

    for seed in range(10):
        a = random_mask(np.random.default_rng(seed), 64, (0.1, 0.2))
        np.testing.assert_array_equal(a, random_mask(np.random.default_rng(seed), 64, (0.1, 0.2)))
        assert 0.05 <= a.mean() <= 0.2


def test_remat_gives_the_same_gradients():
    from clipaway_jax.models import UNet2DConditionModel, UNetConfig

    unet = UNet2DConditionModel(UNetConfig.from_dict(MICRO_UNET))
    x = (
        jax.random.normal(jax.random.key(1), (1, 8, 8, 9)),
        np.array([10.0]),
        jax.random.normal(jax.random.key(2), (1, 3, 32)),
    )
    params = {"params": _random_params(unet)}
    grads = [jax.jit(jax.grad(lambda p, m=m: m.apply(p, *x).sum()))(params) for m in (unet, unet.clone(remat=True))]
    for a, b in zip(*(jax.tree_util.tree_leaves(g) for g in grads)):
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_equal_diffusers(prediction_type):
    """The weights of `--config.snr_gamma`, against diffusers' compute_snr and its train_text_to_image.py
    weighting, on SD's scaled-linear schedule."""
    torch = pytest.importorskip("torch")
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from clipaway_jax.schedulers.base import SchedulerConfig, alphas_cumprod
    from clipaway_jax.training.tasks import min_snr_weights

    schedule = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    timesteps = torch.tensor([0, 1, 10, 100, 250, 500, 750, 999])
    snr = compute_snr(DDPMScheduler(**schedule), timesteps)
    theirs = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    theirs = theirs / (snr + 1 if prediction_type == "v_prediction" else snr)
    alpha_bar = np.asarray(alphas_cumprod(SchedulerConfig.from_dict(schedule, {})), np.float32)[timesteps.numpy()]
    mine = min_snr_weights(jax.numpy.asarray(alpha_bar), 5.0, prediction_type)
    np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), rtol=1e-5)
    assert float(mine[0]) < 0.01 and float(mine[-1]) == pytest.approx(1.0 if prediction_type == "epsilon" else 0.0,
                                                                      abs=1e-2)  # fmt: skip


def test_masked_mean_weighs_the_hole_by_mask_weight_per_example():
    """`--config.mask_weight`: per example, latent pixels under the mask weigh `mask_weight`, the rest 1,
    the weights normalised (weight 1 is the plain mean); a half-covered latent pixel weighs half way."""
    from clipaway_jax.training.tasks import masked_mean

    rng = np.random.default_rng(0)
    error = rng.random((3, 4, 4, 2)).astype(np.float32)
    masks = np.zeros((3, 16, 16, 1), np.float32)
    masks[0, :8, :8] = 1  # the top-left 2x2 latent pixels
    masks[1, :2] = 1  # the top row of latent pixels, half covered
    np.testing.assert_allclose(masked_mean(error, masks, 1.0), error.mean(axis=(1, 2, 3)), rtol=1e-6)
    got = np.asarray(masked_mean(error, masks, 5.0))
    w0, w1 = np.ones((4, 4)), np.ones((4, 4))
    w0[:2, :2] = 5  # wholly covered: the weight
    w1[0] = 3  # half covered: half way
    for i, w in enumerate([w0, w1, np.ones((4, 4))]):
        want = (error[i] * w[..., None]).sum() / (w.sum() * 2)
        assert got[i] == pytest.approx(want, rel=1e-6)


def _diffusers_timestep_weights(strategy, multiplier, portion, begin, end, num_timesteps=1000):
    """diffusers' examples/text_to_image/train_text_to_image_sdxl.py generate_timestep_weights, transcribed
    (the examples are not part of the installed package)."""
    weights = np.ones(num_timesteps)
    num_to_bias = int(portion * num_timesteps)
    if strategy == "later":
        bias_indices = slice(-num_to_bias, None)
    elif strategy == "earlier":
        bias_indices = slice(0, num_to_bias)
    elif strategy == "range":
        bias_indices = slice(begin, end)
    else:
        return weights
    weights[bias_indices] *= multiplier
    return weights / weights.sum()


@pytest.mark.parametrize("strategy", ["later", "earlier", "range"])
def test_timestep_bias_weights_equal_diffusers_sdxl_script(strategy):
    from clipaway_jax.training.tasks import timestep_weights

    mine = timestep_weights(1000, strategy, 3.0, 0.3, 200, 500)
    np.testing.assert_allclose(mine, _diffusers_timestep_weights(strategy, 3.0, 0.3, 200, 500), rtol=1e-12)
    assert timestep_weights(1000) is None  # "none": uniform, drawn as before
    with pytest.raises(ValueError, match="multiplier"):
        timestep_weights(1000, "later", 0.0)
    with pytest.raises(ValueError, match="range"):
        timestep_weights(1000, "range", 2.0, begin=500, end=1200)


def test_the_unet_loss_draws_its_timesteps_from_the_bias_weights(tiny_checkpoint):
    """With all the weight on one timestep, every example is noised at it: a stand-in UNet that outputs
    t makes the loss ~ t^2."""
    from types import SimpleNamespace

    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.models import UNetConfig
    from clipaway_jax.training.tasks import unet_loss

    ckpt = load_checkpoint(tiny_checkpoint, networks=["vae", "text_encoder"])
    config = UNetConfig.from_dict(MICRO_UNET)
    out = lambda params, x, t, context, tokens: jax.numpy.zeros(x.shape[:-1] + (4,)) + t[:, None, None, None]
    stand_in = SimpleNamespace(config=config, apply=out)
    frozen = {n: {"params": ckpt.params[n]} for n in ("vae", "text_encoder")}
    rng = np.random.default_rng(0)
    batch = {"images": rng.random((4, 64, 64, 3), dtype=np.float32), "masks": np.zeros((4, 64, 64), np.float32),
             "text_ids": np.zeros((4, 77), np.int32)}  # fmt: skip
    for t in (3, 700):
        bias = dict(strategy="range", multiplier=1e6, begin=t, end=t + 1)
        loss = unet_loss(stand_in, ckpt.module("vae"), ckpt.module("text_encoder"), ckpt.manifest["scheduler"],
                         timestep_bias=bias)  # fmt: skip
        value = float(jax.jit(loss)({"unet": {}}, frozen, batch, jax.random.key(1)))
        assert abs(np.sqrt(value) - t) < 3, (t, value)


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_the_ema_of_the_params_follows_diffusers_rule_and_is_checkpointed(decay, tmp_path):
    """`ema_decay`: ema <- d ema + (1 - d) params after each update, d = min(decay, (1 + t) / (10 + t)) as
    diffusers' EMAModel; it is saved and restored with the state (and absent when off)."""
    from clipaway_jax.sharding import REPLICATED, make_mesh
    from clipaway_jax.training.data import LoaderState
    from clipaway_jax.training.trainer import Checkpoints, TrainConfig, Trainer

    cfg = TrainConfig(steps=3, global_batch=2, learning_rate=0.1, weight_decay=0.0, optimizer="adamw",
                      ema_decay=decay)  # fmt: skip
    loss = lambda params, frozen, batch, rng: jax.numpy.sum((params["w"] - batch["x"].mean()) ** 2)
    start = {"w": np.zeros(3, np.float32)}
    abstract = {"params": {"w": jax.ShapeDtypeStruct((3,), np.float32)}}
    trainer = Trainer(cfg, loss, abstract, start, tmp_path, make_mesh(), REPLICATED)
    expected, seen = np.zeros(3), []
    for t in range(3):
        trainer.train_step({"x": np.full((2,), 1.0 + t, np.float32)})
        w = np.asarray(trainer.state.params["w"])
        d = min(decay, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * w
        seen.append(w)
    if decay == 0:
        assert trainer.state.ema is None
    else:
        np.testing.assert_allclose(np.asarray(trainer.state.ema["w"]), expected, rtol=1e-6)
        assert not np.allclose(expected, seen[-1])
    checkpoints = Checkpoints(tmp_path, cfg)
    checkpoints.save(3, trainer.state, LoaderState(0, 0))
    checkpoints.close()
    fresh = Trainer(cfg, loss, abstract, start, tmp_path / "fresh", make_mesh(), REPLICATED)
    target = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), fresh.state,
                                    fresh.state_sharding)  # fmt: skip
    state, _ = Checkpoints(tmp_path, cfg).restore_latest(target)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(trainer.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(jax.tree_util.tree_leaves(state)) == len(jax.tree_util.tree_leaves(trainer.state))
