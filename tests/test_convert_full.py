"""Full-size conversion (slow): random weights in the published layouts; peak memory of `convert`."""

import json
import resource
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_full_size_conversion_memory(tmp_path):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from clipaway_jax.models.clip import CLIPVisionConfig
    from clipaway_jax.tiny import alpha_clip_state_dict, ip_adapter_state_dict, mlp_module, write_sd_inpaint

    sd = write_sd_inpaint(tmp_path / "sd", full_size=True)
    unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    ip = ip_adapter_state_dict(unet, embed_dim=1024)
    torch.save(ip, tmp_path / "ip-adapter_sd15.bin")
    del unet
    alpha = CLIPVisionConfig().to_dict() | {"hidden_size": 1024, "num_hidden_layers": 24, "projection_dim": 768}
    torch.save(alpha_clip_state_dict(alpha), tmp_path / "alpha.pth")
    mlp = mlp_module(dict(number_of_hidden_layers=6, alpha_clip_embed_dim=768, ip_adapter_embed_dim=1024))
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, tmp_path / "mlp.safetensors")

    args = [
        "--sd-inpaint",
        sd,
        "--ip-adapter",
        tmp_path / "ip-adapter_sd15.bin",
        "--alpha-clip",
        tmp_path / "alpha.pth",
        "--mlp",
        tmp_path / "mlp.safetensors",
        "--out",
        tmp_path / "ckpt",
    ]
    script = "import sys; from clipaway_jax.cli import main; sys.exit(main(['convert', *sys.argv[1:]]))"
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    from clipaway_jax.checkpoint import load_checkpoint, params_bytes

    ckpt = load_checkpoint(tmp_path / "ckpt")
    total = sum(params_bytes(p) for p in ckpt.params.values())
    print(
        f"converted {sorted(manifest['networks'])}: params {total / 1e9:.2f} GB fp32, peak RSS {peak / 1e9:.2f} GB "
        f"({peak / total:.2f}x)"
    )
    assert peak < 2 * total
