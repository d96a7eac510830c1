"""The accelerator path, checked without an accelerator: `jax.export` lowers the programs for TPU and
CUDA, and the exported modules hold what they must (the Pallas attention kernel on TPU) and nothing they
must not (float64, host callbacks).

What JAX cannot check here: cuDNN's fused attention does not lower without a GPU ("cuDNN is not
detected"), so the CUDA modules are traced with the kernels a CPU would choose for that program (the
blockwise kernel for long attention, XLA's otherwise); the cuDNN choice itself is tested in
test_attention.py by forcing the platform.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from clipaway_jax.models import attention as attn
from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline, RemovalOptions, image_keys, removal_program
from clipaway_jax.schedulers import make_sampler

PLATFORMS = ("tpu", "cuda")


def _forbidden(module: str) -> list[str]:
    """float64 has no place on an accelerator; a host callback would stall the sampling loop."""
    return [word for word in ("f64", "callback") if word in module]


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return CLIPAwayPipeline.from_checkpoint(tiny_checkpoint)


def _removal_args(pipe, size=128):
    images, masks = np.zeros((2, size, size, 3), np.float32), np.ones((2, size, size), np.float32)
    keys = jax.random.key_data(image_keys(0, [0, 1]))
    return (pipe.params, images, masks, pipe.text_ids(["", ""], ["n", "n"]), keys, jnp.float32(7.5),
            jnp.float32(1.0), (jnp.int32(0), jnp.bool_(False)))  # fmt: skip


def _export_removal(pipe, platform, options=None):
    options = options or RemovalOptions(steps=3)
    sampler = make_sampler(options.scheduler, pipe.scheduler_config, options.steps)
    run = removal_program(pipe.nets, sampler, options)
    unwrap = lambda params, images, masks, ids, keys, *rest: run(params, images, masks, ids,
                                                                 jax.random.wrap_key_data(keys), *rest)  # fmt: skip
    program = jax.jit(unwrap)  # keys travel as raw key data
    return export.export(program, platforms=[platform])(*_removal_args(pipe)).mlir_module()


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("scheduler", ["pndm", "ddim", "dpm++2m", "euler"])
def test_removal_program_lowers_for_accelerators(pipe, platform, scheduler):
    module = _export_removal(pipe, platform, RemovalOptions(steps=3, scheduler=scheduler))
    assert "stablehlo.while" in module  # the sampling loop stays one compiled loop
    assert _forbidden(module) == []


def test_tpu_removal_program_holds_the_pallas_attention_kernel(pipe, monkeypatch):
    """Traced for TPU, long self-attention is the Pallas flash kernel (the threshold lowered so the tiny
    UNet's 256-token level counts as long)."""
    monkeypatch.setattr(attn, "BLOCKWISE_MIN_SCORES", 256 * 256)
    with attn.for_platform("tpu"):
        module = _export_removal(pipe, "tpu")
    assert "tpu_custom_call" in module and _forbidden(module) == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_eval_feature_extractors_lower_for_accelerators(platform):
    from clipaway_jax.models import CLIPVisionConfig, CLIPVisionTransformer
    from clipaway_jax.models.inception import FIDInceptionV3
    from clipaway_jax.models.lpips import LPIPS

    image = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    clip = CLIPVisionTransformer(CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                  num_attention_heads=2, image_size=28, patch_size=14))  # fmt: skip
    crops = jax.ShapeDtypeStruct((2, 28, 28, 3), jnp.float32)
    for module, inputs in ((FIDInceptionV3(), (image,)), (LPIPS(), (image, image)), (clip, (crops,))):
        params = jax.eval_shape(module.init, jax.random.key(0), *inputs)
        exported = export.export(jax.jit(module.apply), platforms=[platform])(params, *inputs)
        assert _forbidden(exported.mlir_module()) == [], type(module).__name__


TRAIN_STEP = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp, numpy as np
    from jax import export
    from clipaway_jax.checkpoint import build_module, load_checkpoint
    from clipaway_jax.sharding import FSDP_RULES, batch_sharding, make_mesh, replicated
    from clipaway_jax.training import tasks
    from clipaway_jax.training.trainer import TrainConfig, Trainer
    from clipaway_jax.models import abstract_params
    ckpt = load_checkpoint(sys.argv[1], networks=["unet", "vae", "text_encoder"])
    unet = ckpt.module("unet")
    mesh = make_mesh(fsdp=8)
    frozen = {n: {"params": ckpt.params[n]} for n in ("vae", "text_encoder")}
    loss = tasks.unet_loss(unet, ckpt.module("vae"), ckpt.module("text_encoder"), ckpt.manifest["scheduler"])
    abstract = abstract_params(unet, *build_module(ckpt.manifest["networks"]["unet"])[1])  # with IP-Adapter
    abstract = {"params": {"unet": abstract["params"]}}  # a task trains {network: params}
    trainer = Trainer(TrainConfig(steps=1, global_batch=8), loss, abstract, {"unet": ckpt.params["unet"]}, sys.argv[2],
                      mesh, FSDP_RULES, frozen)
    ids = jnp.zeros((8, 77), jnp.int32)
    batch = {"images": jnp.zeros((8, 64, 64, 3)), "masks": jnp.zeros((8, 64, 64)), "text_ids": ids}
    shard = jax.tree_util.tree_map(lambda x: batch_sharding(mesh, x.ndim), batch)
    step = jax.jit(trainer._step, in_shardings=(trainer.state_sharding, None, shard),
                   out_shardings=(trainer.state_sharding, replicated(mesh)))
    kernel = any("fsdp" in str(s.spec) for s in jax.tree_util.tree_leaves(trainer.state_sharding.params))
    spec = lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    state = jax.tree_util.tree_map(lambda x: spec(x, x.sharding), trainer.state)
    frozen = jax.tree_util.tree_map(lambda x: spec(x, replicated(mesh)), frozen)
    for platform in ("tpu", "cuda"):
        module = export.export(step, platforms=[platform])(state, frozen, batch).mlir_module()
        bad = [w for w in ("f64", "callback") if w in module]
        sharded = "mhlo.sharding" in module or "sdy.sharding" in module  # GSPMD or Shardy annotations
        print(f"RESULT {platform} sharded={sharded} fsdp_kernel={kernel} forbidden={bad}")
    """
)


def test_unet_train_step_with_fsdp_shardings_lowers_for_accelerators(tiny_checkpoint, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", TRAIN_STEP, str(tiny_checkpoint), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert lines == [f"RESULT {p} sharded=True fsdp_kernel=True forbidden=[]" for p in PLATFORMS], result.stdout
