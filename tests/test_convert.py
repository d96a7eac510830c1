"""`clipaway-jax convert` on files in the published layouts, `load_checkpoint`, and every bad input."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from functools import partial

import jax
import numpy as np
import pytest
import torch
from fixtures import alpha_clip_reference, assert_close, nchw, nhwc, torch_unet

from clipaway_jax import xla
from clipaway_jax.checkpoint import CheckpointError, load_checkpoint
from clipaway_jax.cli import main as cli_main
from clipaway_jax.convert.published import Sources, convert


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def _run_cli(*args, capsys):
    code = cli_main(["convert", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return code, err


def test_manifest_describes_every_network(checkpoint, published):
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert set(manifest["networks"]) == {
        "unet",
        "unet_t2i",
        "vae",
        "text_encoder",
        "image_proj",
        "alpha_clip",
        "mlp",
        "image_encoder",
        "clip_text",
        "clip_vision",
    }
    unet = manifest["networks"]["unet"]
    assert unet["config"]["in_channels"] == 9 and unet["ip_adapter"] is True
    t2i = manifest["networks"]["unet_t2i"]  # the blended base's UNet, from --sd-base
    assert t2i["config"]["in_channels"] == 4 and t2i["ip_adapter"] is True
    assert [s["path"] for s in unet["sources"]][1] == str(published["ip_adapter"])
    assert all(len(s["sha256"]) == 64 for entry in manifest["networks"].values() for s in entry["sources"])
    assert manifest["scheduler"]["_class_name"] == "PNDMScheduler" and manifest["dtype"] == "float32"
    assert (checkpoint / "tokenizer" / "vocab.json").is_file() and manifest["package_version"]


def test_round_trip_unet_with_ip_adapter_equals_diffusers(checkpoint, published):
    from diffusers import UNet2DConditionModel

    reference = UNet2DConditionModel.from_pretrained(published["sd_inpaint"] / "unet").eval()
    ip = torch.load(published["ip_adapter"], weights_only=True)
    reference._load_ip_adapter_weights([ip])
    ckpt = load_checkpoint(checkpoint, networks=["unet", "image_proj"])
    rng = np.random.RandomState(0)
    sample, ctx = rng.randn(2, 9, 16, 16).astype(np.float32), rng.randn(2, 77, 32).astype(np.float32)
    embeds = rng.randn(2, 40).astype(np.float32)
    with torch.no_grad():
        expected = reference(
            torch.from_numpy(sample),
            torch.tensor([3, 700]),
            torch.from_numpy(ctx),
            added_cond_kwargs={"image_embeds": [torch.from_numpy(embeds)[:, None]]},
        ).sample
    # compiled: applied eagerly, every op of a UNet compiles on its own (~50 ms each, seconds in all)
    tokens = xla.jit(ckpt.module("image_proj").apply)({"params": ckpt.params["image_proj"]}, embeds)
    out = xla.jit(ckpt.module("unet").apply)({"params": ckpt.params["unet"]}, nhwc(sample), np.array([3, 700]), ctx,
                                             tokens)  # fmt: skip
    assert_close(nchw(out), expected.numpy(), "converted unet")


def test_round_trip_vae_text_alpha_clip_and_mlp(checkpoint, published):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from clipaway_jax.tiny import mlp_module
    from clipaway_jax.tokenizer import load_tokenizer, tokenize

    ckpt = load_checkpoint(checkpoint)
    apply = lambda name, *a, **k: xla.jit(partial(ckpt.module(name).apply, **k))({"params": ckpt.params[name]}, *a)
    z = np.random.RandomState(1).randn(1, 4, 8, 8).astype(np.float32)
    with torch.no_grad():
        vae = AutoencoderKL.from_pretrained(published["sd_inpaint"] / "vae").eval()
        assert_close(nchw(apply("vae", nhwc(z), method="decode")), vae.decode(torch.from_numpy(z)).sample.numpy())

        ids = tokenize(load_tokenizer(ckpt.tokenizer_path), ["a photo of a cat.", ""])
        text = CLIPTextModel.from_pretrained(published["sd_inpaint"] / "text_encoder").eval()
        expected = text(torch.from_numpy(ids).long()).last_hidden_state.numpy()
        assert_close(apply("text_encoder", ids).last_hidden_state, expected, "text encoder")

        reference = alpha_clip_reference(resolution=28)
        reference.load_state_dict(torch.load(published["alpha_clip"], weights_only=True))
        pixels, alpha = torch.randn(2, 3, 28, 28), torch.randn(2, 1, 28, 28)
        out = apply("alpha_clip", nhwc(pixels.numpy()), nhwc(alpha.numpy())).image_embeds
        assert_close(out, reference(pixels, alpha).numpy(), "alpha clip")

        mlp = mlp_module()
        mlp.load_state_dict(load_file(published["mlp"]))
        x = torch.randn(3, 24)
        assert_close(apply("mlp", x.numpy()), mlp(x).numpy(), "mlp")


def test_bin_weights_and_bfloat16_storage(published, tmp_path):
    sd = tmp_path / "sd-bin"
    from clipaway_jax.tiny import write_sd_inpaint

    write_sd_inpaint(sd, safetensors=False)
    assert (sd / "unet" / "diffusion_pytorch_model.bin").is_file()
    convert(Sources(sd_inpaint=sd), tmp_path / "bf16", dtype="bfloat16", progress=lambda _: None)
    ckpt = load_checkpoint(tmp_path / "bf16", networks=["vae"])
    assert all(x.dtype == jax.numpy.bfloat16 for x in jax.tree_util.tree_leaves(ckpt.params["vae"]))
    as_f32 = load_checkpoint(tmp_path / "bf16", networks=["vae"], dtype="float32")
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(as_f32.params["vae"]))


def test_fp16_variant_file_names_are_found(published, tmp_path):
    sd = tmp_path / "sd"
    shutil.copytree(published["sd_inpaint"], sd)
    for part, name in (
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ):
        (sd / part / f"{name}.safetensors").rename(sd / part / f"{name}.fp16.safetensors")
    convert(Sources(sd_inpaint=sd), tmp_path / "out", progress=lambda _: None)
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_loads_sharded_on_8_devices(checkpoint):
    script = textwrap.dedent(
        f"""
        import jax
        from clipaway_jax.checkpoint import load_checkpoint
        from clipaway_jax.sharding import FSDP_RULES, make_mesh
        mesh = make_mesh(data=1, fsdp=8)
        ckpt = load_checkpoint({str(checkpoint)!r}, mesh=mesh, rules=FSDP_RULES, networks=["unet", "mlp"])
        kernel = ckpt.params["unet"]["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["ff"]["net_2"]["kernel"]
        assert len(jax.devices()) == 8
        print("SPEC", kernel.sharding.spec, kernel.shape, len(kernel.addressable_shards),
              kernel.addressable_shards[0].data.shape)
        conv_out = ckpt.params["unet"]["conv_out"]["kernel"]
        print("CONV_OUT", conv_out.sharding.spec)
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    spec_line = next(line for line in result.stdout.splitlines() if line.startswith("SPEC"))
    # ff.net_2 kernel is [mlp=128, embed=32]: the mlp axis is split 8 ways, 16 rows per device
    assert "'fsdp'" in spec_line and "(128, 32)" in spec_line and "(16, 32)" in spec_line
    # conv_out has 4 output channels: 8 does not divide 4, so it stays replicated
    assert "CONV_OUT P(None, None, None, None)" in result.stdout


# --- bad input: one clear line naming the file and the problem; nothing half-written ---


def test_missing_folder_lists_what_was_expected(tmp_path, capsys):
    code, err = _run_cli("--sd-inpaint", tmp_path / "nope", "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and err.count("\n") == 0
    assert "missing inputs" in err and "nope/unet/config.json" in err and "diffusion_pytorch_model.safetensors" in err
    assert not (tmp_path / "out").exists()


def test_wrong_network_file_lists_keys(published, tmp_path, capsys):
    code, err = _run_cli("--alpha-clip", published["mlp"], "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and str(published["mlp"]) in err and "not an AlphaCLIP" in err


def test_mlp_file_of_another_network(published, tmp_path, capsys):
    code, err = _run_cli(
        "--mlp", published["image_encoder"] / "model.safetensors", "--out", tmp_path / "o", capsys=capsys
    )
    assert code == 1 and "not a CLIPAway MLP" in err


def test_text_to_image_unet_is_refused_in_plain_words(published, tmp_path, capsys):
    sd = tmp_path / "sd"
    shutil.copytree(published["sd_inpaint"], sd)
    shutil.rmtree(sd / "unet")
    unet4 = torch_unet(in_channels=4)
    unet4.save_pretrained(sd / "unet")
    config = json.loads((sd / "unet" / "config.json").read_text())
    config["in_channels"] = 9  # a config that claims inpainting, weights that are not
    (sd / "unet" / "config.json").write_text(json.dumps(config))
    code, err = _run_cli("--sd-inpaint", sd, "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and "conv_in.weight: expected (3, 3, 9, 32)" in err and "4 input channels" in err
    assert "inpainting" in err and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]


def test_text_encoder_of_another_width_is_refused(published, tmp_path, capsys):
    sd = tmp_path / "sd"
    shutil.copytree(published["sd_inpaint"], sd)
    config = json.loads((sd / "text_encoder" / "config.json").read_text())
    (sd / "text_encoder" / "config.json").write_text(json.dumps(config | {"hidden_size": 2 * config["hidden_size"]}))
    code, err = _run_cli("--sd-inpaint", sd, "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and "cross_attention_dim" in err and f"hidden_size {2 * config['hidden_size']}" in err, err
    assert not (tmp_path / "out").exists()


def test_truncated_safetensors(published, tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    data = published["mlp"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    code, err = _run_cli("--mlp", bad, "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and str(bad) in err and "truncated" in err


def test_corrupt_bin(published, tmp_path, capsys):
    bad = tmp_path / "ip-adapter_sd15.bin"
    data = published["ip_adapter"].read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    code, err = _run_cli(
        "--sd-inpaint", published["sd_inpaint"], "--ip-adapter", bad, "--out", tmp_path / "o", capsys=capsys
    )
    assert code == 1 and str(bad) in err and "corrupt or truncated" in err


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    bad = tmp_path / "clip_l14_grit+mim_fultune_6xe.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": _RunsCode()}, bad, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    code, err = _run_cli("--alpha-clip", bad, "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and "unsafe pickle" in err and str(bad) in err


def test_existing_out_needs_force(published, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _run_cli("--mlp", published["mlp"], "--out", out, capsys=capsys)
    assert code == 1 and "already exists" in err and (out / "keep.txt").read_text() == "mine"
    code, _ = _run_cli("--mlp", published["mlp"], "--out", out, "--force", capsys=capsys)
    assert code == 0 and (out / "manifest.json").is_file() and not (out / "keep.txt").exists()


def test_interrupted_conversion_leaves_nothing_loadable(published, tmp_path, monkeypatch):
    import clipaway_jax.convert.published as pub

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pub, "write_manifest", explode)
    with pytest.raises(KeyboardInterrupt):
        convert(Sources(mlp=published["mlp"]), tmp_path / "out", progress=lambda _: None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "out")


def test_partial_directory_is_not_a_checkpoint(tmp_path):
    (tmp_path / "half" / "params").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="not a complete clipaway-jax checkpoint"):
        load_checkpoint(tmp_path / "half")


def test_checkpoints_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "checkpoints.convert", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode == 0 and "ip-adapter_sd15.bin" in result.stdout and "--out" in result.stdout


def test_loading_needs_no_torch(checkpoint):
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from clipaway_jax.checkpoint import load_checkpoint\n"
        f"c = load_checkpoint({str(checkpoint)!r}); print(sorted(c.params))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]
    assert "unet" in result.stdout


# --- a text-to-image UNet goes to --sd-base (the blended base) and is refused as an inpainting one ---


def test_text_to_image_unet_is_refused_at_convert_time(published, tmp_path, capsys):
    code, err = _run_cli("--sd-inpaint", published["sd_base"], "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and err.count("\n") == 0
    assert "in_channels 4" in err and "text-to-image" in err and "not an inpainting one" in err
    assert "botp/stable-diffusion-v1-5-inpainting" in err and "--dcgd12-from-base" in err and "--sd-base" in err
    assert not (tmp_path / "out").exists()
    code, err = _run_cli("--sd-base", published["sd_inpaint"], "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and "in_channels 9" in err and "--sd-base expects a text-to-image" in err
    assert not (tmp_path / "out").exists()


def test_sd_base_alone_makes_a_blended_checkpoint(published, tmp_path, capsys):
    code, err = _run_cli("--sd-base", published["sd_base"], "--ip-adapter", published["ip_adapter"], "--out",
                         tmp_path / "out", capsys=capsys)  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["networks"]) == {"unet_t2i", "vae", "text_encoder", "image_proj"}
    assert manifest["scheduler"]["beta_schedule"] == "scaled_linear" and (tmp_path / "out" / "tokenizer").is_dir()


def test_dcgd12_from_base_initializes_only_the_12_channel_unet(published, tmp_path, capsys):
    sd = published["sd_base"]
    code, err = _run_cli("--sd-inpaint", sd, "--dcgd12-from-base", "--out", tmp_path / "out", capsys=capsys)
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "out")
    assert "unet" not in ckpt.params and ckpt.manifest["networks"]["unet_dcgd12"]["config"]["in_channels"] == 12
    kernel = np.asarray(ckpt.params["unet_dcgd12"]["conv_in"]["kernel"])
    from safetensors.numpy import load_file

    base = load_file(sd / "unet" / "diffusion_pytorch_model.safetensors")["conv_in.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(kernel[:, :, :4], base)
    assert not kernel[:, :, 4:].any()
    code, err = _run_cli("--sd-inpaint", published["sd_inpaint"], "--dcgd12-from-base", "--out", tmp_path / "o2",
                         capsys=capsys)  # fmt: skip
    assert code == 1 and "takes a text-to-image SD-1.5 folder" in err and "--dcgd12" in err


# --- Hugging Face Hub ids, resolved from a cache the test writes (no network) ---


def _cache_repo(hf_home, repo, files: dict, revision="0123456789abcdef0123456789abcdef01234567"):
    """The Hub cache layout huggingface_hub resolves offline: refs/main -> snapshots/<commit>/..."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    for rel, source in files.items():
        target = root / "snapshots" / revision / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    return revision


def test_hub_ids_resolve_from_the_offline_cache(published, tmp_path):
    hf_home = tmp_path / "hf"
    _cache_repo(hf_home, "botp/stable-diffusion-v1-5-inpainting", {".": published["sd_inpaint"]})
    _cache_repo(hf_home, "h94/IP-Adapter", {"models/ip-adapter_sd15.bin": published["ip_adapter"],
                                            "models/image_encoder": published["image_encoder"]})  # fmt: skip
    commit = _cache_repo(hf_home, "openai/clip-vit-large-patch14", {".": published["clip"]}, "f" * 40)
    args = ["--sd-inpaint", "botp/stable-diffusion-v1-5-inpainting", "--ip-adapter", "h94/IP-Adapter",
            "--image-encoder", "h94/IP-Adapter:models/image_encoder",
            "--clip", f"openai/clip-vit-large-patch14@{commit}", "--out", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-m", "clipaway_jax.cli", "convert", *args], capture_output=True,
                            text=True, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {"unet", "vae", "text_encoder", "image_proj", "image_encoder", "clip_text"} <= set(manifest["networks"])
    sources = {s["path"] for entry in manifest["networks"].values() for s in entry["sources"]}
    assert any("models--h94--IP-Adapter" in s and s.endswith("ip-adapter_sd15.bin") for s in sources)
    assert any(f"snapshots/{commit}" in s for s in sources)


def test_hub_id_missing_from_the_offline_cache_is_one_clear_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "clipaway_jax.cli", "convert", "--clip", "openai/nope", "--out", tmp_path / "o"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "openai/nope" in result.stderr and "local Hugging Face cache" in result.stderr


def test_local_paths_are_not_taken_for_hub_ids(tmp_path):
    from clipaway_jax.convert import hub

    (tmp_path / "ckpts").mkdir()
    assert hub.parse(str(tmp_path / "ckpts"), "sd") is None
    assert hub.parse("./ckpts/IPAdapter", "transformers") is None
    assert hub.parse("h94/IP-Adapter", "ip_adapter") == hub.HubId("h94/IP-Adapter", None, "models/ip-adapter_sd15.bin")
    assert hub.parse("a/b@v1.0:sub/dir", "transformers") == hub.HubId("a/b", "v1.0", "sub/dir")


# --- file formats and damaged checkpoints are named ---


def test_a_safetensors_file_named_pth_is_read_as_safetensors(published, tmp_path, capsys):
    from safetensors.torch import save_file

    state = torch.load(published["alpha_clip"], weights_only=True)
    disguised = tmp_path / "clip_l14_grit+mim_fultune_6xe.pth"
    save_file({k: v.contiguous() for k, v in state.items()}, disguised)
    code, err = _run_cli("--alpha-clip", disguised, "--out", tmp_path / "out", capsys=capsys)
    assert code == 0, err
    mlp_as_pth = tmp_path / "model.pth"
    shutil.copy(published["mlp"], mlp_as_pth)
    code, err = _run_cli("--alpha-clip", mlp_as_pth, "--out", tmp_path / "o2", capsys=capsys)
    assert code == 1 and "unsafe pickle" not in err and "a safetensors file despite its .pth name" in err


def test_a_file_of_no_weights_format_is_named(tmp_path, capsys):
    bad = tmp_path / "clip_l14_grit+mim_fultune_6xe.pth"
    bad.write_text("<html>Google Drive: quota exceeded</html>")
    code, err = _run_cli("--alpha-clip", bad, "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and str(bad) in err and "unknown format" in err and "<html>" in err


def test_corrupt_manifest_names_the_file_and_the_damage(checkpoint, tmp_path):
    broken = tmp_path / "ck"
    shutil.copytree(checkpoint, broken)
    (broken / "manifest.json").write_text('{"format": "clipaway-jax/1", "networks": {')
    with pytest.raises(CheckpointError, match=r"ck/manifest.json: damaged checkpoint: its manifest is not valid JSON"):
        load_checkpoint(broken)


def test_the_layers_import_one_way():
    """`clipaway_jax.cli` imports the commands; no module imports `clipaway_jax.cli` back (running it as a
    program, `python -m clipaway_jax.cli`, as the mini recipe does, is not an import), and only the
    commands themselves import `clipaway_jax.commands` (the library below them never does)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent / "clipaway_jax"
    cli = re.compile(r"^\s*(from clipaway_jax\.cli import|import clipaway_jax\.cli|from clipaway_jax import cli)", re.M)
    commands = re.compile(r"^\s*(from clipaway_jax\.commands|import clipaway_jax\.commands|from clipaway_jax import "
                          r"commands)", re.M)  # fmt: skip
    files = {p: p.read_text() for p in root.rglob("*.py")}
    assert [p for p, text in files.items() if p.name != "cli.py" and cli.search(text)] == []
    below = [p for p, text in files.items() if p.name != "cli.py" and "commands" not in p.parts]
    assert [p for p in below if commands.search(files[p])] == []
