"""The built-in tiny model set: configs small enough for CPU tests and the demo, and a real CLIP
BPE tokenizer (vocab.json + merges.txt in the published format) learned from a small corpus.

Random weights remove nothing; these exist to run every code path end to end without downloads.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

TINY_UNET = dict(
    sample_size=16,
    in_channels=9,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=2,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 32, 32),  # four blocks: 8x downsampling, as SD's VAE
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
)

TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=24,
    hidden_act="quick_gelu",
)  # vocab_size / eos_token_id come from the tokenizer

TINY_ALPHA_CLIP = dict(
    hidden_size=64,
    intermediate_size=256,
    projection_dim=24,
    num_hidden_layers=2,
    num_attention_heads=1,  # width // 64, as AlphaCLIP's build_model derives it
    image_size=28,
    patch_size=14,
    hidden_act="quick_gelu",
    alpha=True,
)

TINY_IMAGE_ENCODER = dict(
    hidden_size=48,
    intermediate_size=96,
    projection_dim=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=28,
    patch_size=14,
    hidden_act="gelu",
)

TINY_MLP = dict(number_of_hidden_layers=6, alpha_clip_embed_dim=24, ip_adapter_embed_dim=40)

IP_TOKENS = 4

_CORPUS = (
    "a photo of a {}. a blurry photo of the {}. a good photo of a small {}. a photo of the large {}. "
    "monochrome, lowres, bad anatomy, worst quality, low quality. "
    "person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop sign "
    "parking meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella "
    "handbag tie suitcase frisbee skis snowboard sports ball kite baseball bat glove skateboard "
    "surfboard tennis racket bottle wine glass cup fork knife spoon bowl banana apple sandwich orange "
    "broccoli carrot hot dog pizza donut cake chair couch potted plant bed dining table toilet tv "
    "laptop mouse remote keyboard cell phone microwave oven toaster sink refrigerator book clock vase "
    "scissors teddy bear hair drier toothbrush kitchen street beach forest living room office field "
    "mountain river lake park garden bedroom bathroom road sky grass water snow sand building"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _learn_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Plain BPE on `</w>`-terminated words; ties broken by the pair's text, so it is deterministic."""
    counts = collections.Counter(words)
    vocab = {tuple(w[:-1]) + (w[-1] + "</w>",): c for w, c in counts.items()}
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for symbols, c in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab = {_merge(symbols, best): c for symbols, c in vocab.items()}
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def write_tokenizer(folder: str | Path, num_merges: int = 200, corpus: str = _CORPUS) -> int:
    """Write `vocab.json`, `merges.txt`, `tokenizer_config.json` and `special_tokens_map.json` in the
    layout of SD's `tokenizer/` folder; returns the vocabulary size (EOS is the last id, as in CLIP)."""
    import re

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    words = re.findall(r"[a-z]+", corpus.lower())
    merges = _learn_merges(words, num_merges)
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return len(tokens)


# --- the tiny model set in the published file layouts (needs torch, diffusers, transformers) ---

PUBLISHED_NAMES = dict(
    sd_inpaint="stable-diffusion-inpainting",
    sd_base="stable-diffusion-v1-5",
    ip_adapter="ip-adapter_sd15.bin",
    alpha_clip="clip_l14_grit+mim_fultune_6xe.pth",
    mlp="clipaway/model.safetensors",
    image_encoder="image_encoder",
    clip="clip-vit-large-patch14",
)

SCHEDULER_CONFIG = dict(  # SD-1.5 inpainting's published scheduler/scheduler_config.json
    _class_name="PNDMScheduler",
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    clip_sample=False,
)


def randomize_(module, seed: int = 0, scale: float = 0.2, fan_in: bool = False):
    """Random values in every parameter (norm scales around 1), so no branch hides behind an init of 0/1.
    `fan_in`: matrices and kernels get standard deviation 1/sqrt(fan-in) instead of `scale`, which keeps
    activations of order 1 through a deep network: at the published sizes a flat 0.2 grows them ~100x per
    UNet block, past float32's range (torch's GroupNorm then returns inf, and no comparison means anything)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.ndim == 1:
                p.copy_(1.0 + scale * torch.randn_like(p))
            elif fan_in and p.ndim > 1:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            else:
                p.copy_(scale * torch.randn_like(p))
    return module.eval()


def ip_adapter_state_dict(unet, seed: int = 1, embed_dim: int | None = None) -> dict:
    """An `ip-adapter_sd15.bin` dict for `unet`: random values, the published key names and nesting."""
    import torch

    torch.manual_seed(seed)
    embed_dim = embed_dim or TINY_IMAGE_ENCODER["projection_dim"]
    cross = unet.config.cross_attention_dim
    ip = {}
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_q.out_features
            ip[f"{index}.to_k_ip.weight"] = 0.2 * torch.randn(hidden, cross)
            ip[f"{index}.to_v_ip.weight"] = 0.2 * torch.randn(hidden, cross)
    image_proj = {
        "proj.weight": 0.2 * torch.randn(IP_TOKENS * cross, embed_dim),
        "proj.bias": 0.2 * torch.randn(IP_TOKENS * cross),
        "norm.weight": 1 + 0.2 * torch.randn(cross),
        "norm.bias": 0.2 * torch.randn(cross),
    }
    return {"image_proj": image_proj, "ip_adapter": ip}


def alpha_clip_state_dict(config: dict = TINY_ALPHA_CLIP, seed: int = 0, scale: float = 0.2) -> dict:
    """AlphaCLIP visual weights with its published key names (fused `attn.in_proj`), as torch tensors."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: scale * torch.randn(*shape, generator=g)
    ones = lambda n: 1 + rand(n)
    w, p, out = config["hidden_size"], config["patch_size"], config["projection_dim"]
    tokens = (config["image_size"] // p) ** 2 + 1
    state = {
        "conv1.weight": rand(w, 3, p, p),
        "conv1_alpha.weight": rand(w, 1, p, p),
        "class_embedding": rand(w),
        "positional_embedding": rand(tokens, w),
        "ln_pre.weight": ones(w),
        "ln_pre.bias": rand(w),
        "ln_post.weight": ones(w),
        "ln_post.bias": rand(w),
        "proj": rand(w, out),
    }
    for i in range(config["num_hidden_layers"]):
        b = f"transformer.resblocks.{i}."
        state |= {
            b + "attn.in_proj.weight": rand(3 * w, w),
            b + "attn.in_proj.bias": rand(3 * w),
            b + "attn.out_proj.weight": rand(w, w),
            b + "attn.out_proj.bias": rand(w),
            b + "ln_1.weight": ones(w),
            b + "ln_1.bias": rand(w),
            b + "mlp.c_fc.weight": rand(4 * w, w),
            b + "mlp.c_fc.bias": rand(4 * w),
            b + "mlp.c_proj.weight": rand(w, 4 * w),
            b + "mlp.c_proj.bias": rand(w),
            b + "ln_2.weight": ones(w),
            b + "ln_2.bias": rand(w),
        }
    return state


def mlp_module(config: dict = TINY_MLP, seed: int = 0):
    """CLIPAway's projection MLP exactly as its `model/clip_away.py` builds it (torch)."""
    import torch.nn as nn

    n, a, p = (
        config["number_of_hidden_layers"],
        config["alpha_clip_embed_dim"],
        config["ip_adapter_embed_dim"],
    )
    layers = []
    for i in range(n):
        width_in, width_out = (a, a) if i < n // 2 else (a, p) if i == n // 2 else (p, p)
        layers += [nn.Linear(width_in, width_out), nn.LayerNorm(width_out), nn.GELU()]
    layers.append(nn.Linear(p, p))
    return randomize_(nn.Sequential(*layers), seed)


FULL_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                 bos_token_id=0, eos_token_id=2, pad_token_id=1)  # SD-1.5's text_encoder/config.json  # fmt: skip


def write_sd_inpaint(folder: Path, seed: int = 0, safetensors: bool = True, full_size: bool = False) -> Path:
    """A diffusers SD-inpainting folder (unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json);
    `full_size` uses the published SD-1.5 inpainting configs (random weights, ~4.3 GB)."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from clipaway_jax.models import UNetConfig, VAEConfig

    folder = Path(folder)
    vocab = write_tokenizer(folder / "tokenizer")
    unet_cfg, vae_cfg = (UNetConfig().to_dict(), VAEConfig().to_dict()) if full_size else (TINY_UNET, TINY_VAE)
    text_cfg = FULL_TEXT if full_size else dict(TINY_TEXT, vocab_size=vocab, eos_token_id=vocab - 1)
    torch.manual_seed(seed)
    unet = randomize_(UNet2DConditionModel(**unet_cfg), seed, fan_in=full_size)
    unet.save_pretrained(folder / "unet", safe_serialization=safetensors)
    randomize_(AutoencoderKL(**vae_cfg), seed + 1, fan_in=full_size).save_pretrained(
        folder / "vae", safe_serialization=safetensors
    )
    text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    randomize_(text, seed + 2, fan_in=full_size).save_pretrained(
        folder / "text_encoder", safe_serialization=safetensors
    )
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    index = {
        "_class_name": "StableDiffusionInpaintPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_sd_base(
    folder: Path, inpaint: Path, seed: int = 0, safetensors: bool = True, full_size: bool = False
) -> Path:
    """A text-to-image SD folder beside the inpainting one `inpaint`: its own 4-channel UNet, the same VAE,
    text encoder, tokenizer and scheduler (as SD-1.5 and SD-1.5 inpainting share theirs); `full_size` when
    `inpaint` has the published sizes (fan-in scaled random weights, see `randomize_`)."""
    import shutil

    import diffusers
    import torch
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(inpaint / part, folder / part, dirs_exist_ok=True)
    config = {**json.loads((inpaint / "unet" / "config.json").read_text()), "in_channels": 4}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(seed)
    unet = randomize_(UNet2DConditionModel(**config), seed, fan_in=full_size)
    unet.save_pretrained(folder / "unet", safe_serialization=safetensors)
    index = json.loads((inpaint / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionPipeline", _diffusers_version=diffusers.__version__)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_published(folder: str | Path, seed: int = 0, safetensors: bool = True) -> dict[str, Path]:
    """Every CLIPAway input file, tiny and random, in the published layouts; returns name -> path."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    paths = {name: folder / rel for name, rel in PUBLISHED_NAMES.items()}
    write_sd_inpaint(paths["sd_inpaint"], seed, safetensors)
    write_sd_base(paths["sd_base"], paths["sd_inpaint"], seed + 8, safetensors)
    unet = UNet2DConditionModel.from_pretrained(paths["sd_inpaint"] / "unet")
    torch.save(ip_adapter_state_dict(unet, seed + 3), paths["ip_adapter"])
    torch.save(alpha_clip_state_dict(seed=seed + 4), paths["alpha_clip"])
    paths["mlp"].parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in mlp_module(seed=seed + 5).state_dict().items()}, paths["mlp"])
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_IMAGE_ENCODER))
    randomize_(encoder, seed + 6).save_pretrained(paths["image_encoder"])
    vocab = len(json.loads((paths["sd_inpaint"] / "tokenizer" / "vocab.json").read_text()))
    text = dict(TINY_TEXT, vocab_size=vocab, eos_token_id=vocab - 1)
    vision = {k: v for k, v in TINY_ALPHA_CLIP.items() if k != "alpha"} | {"num_attention_heads": 2}
    clip = CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=TINY_ALPHA_CLIP["projection_dim"])
    )
    randomize_(clip, seed + 7).save_pretrained(paths["clip"])
    return paths


FULL_ALPHA_CLIP = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, projection_dim=768)  # fmt: skip
FULL_MLP = dict(number_of_hidden_layers=6, alpha_clip_embed_dim=768, ip_adapter_embed_dim=1024)


def write_full_size(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """The inference files at published sizes (SD-1.5 inpainting, IP-Adapter SD-1.5, AlphaCLIP ViT-L/14,
    the MLP), random weights, in the published layouts: ~5.4 GB, for the slow tests and the benchmarks."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    folder = Path(folder)
    paths = {name: folder / rel for name, rel in PUBLISHED_NAMES.items() if name in ("sd_inpaint", "ip_adapter",
             "alpha_clip", "mlp")}  # fmt: skip
    write_sd_inpaint(paths["sd_inpaint"], seed, full_size=True)
    unet = UNet2DConditionModel.from_pretrained(paths["sd_inpaint"] / "unet")
    torch.save(ip_adapter_state_dict(unet, seed + 3, embed_dim=FULL_MLP["ip_adapter_embed_dim"]), paths["ip_adapter"])
    del unet
    torch.save(alpha_clip_state_dict(FULL_ALPHA_CLIP, seed + 4), paths["alpha_clip"])
    paths["mlp"].parent.mkdir(parents=True, exist_ok=True)
    mlp = mlp_module(FULL_MLP, seed + 5)
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, paths["mlp"])
    return paths
