"""Shared by the benchmarks: model sets at a chosen size, as an in-memory checkpoint with random weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

import flax
import jax
import jax.numpy as jnp

from clipaway_jax.checkpoint import Checkpoint
from clipaway_jax.models import UNetConfig, VAEConfig, example_inputs
from clipaway_jax.tiny import (
    SCHEDULER_CONFIG,
    TINY_ALPHA_CLIP,
    TINY_MLP,
    TINY_TEXT,
    TINY_UNET,
    TINY_VAE,
    write_tokenizer,  # fmt: skip
)

MID_UNET = dict(TINY_UNET, block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                cross_attention_dim=768, attention_head_dim=8, sample_size=32,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)  # fmt: skip
MID_VAE = dict(TINY_VAE, block_out_channels=(64, 128, 256, 256), norm_num_groups=32)
MID_TEXT = dict(TINY_TEXT, hidden_size=768, intermediate_size=3072, num_hidden_layers=4, num_attention_heads=12,
                projection_dim=768)  # fmt: skip
MID_ALPHA = dict(TINY_ALPHA_CLIP, hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                 num_attention_heads=8, image_size=224, projection_dim=768)  # fmt: skip
MID_MLP = dict(TINY_MLP, alpha_clip_embed_dim=768, ip_adapter_embed_dim=1024)

FULL_TEXT = dict(TINY_TEXT, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 projection_dim=768)  # SD-1.5's CLIP ViT-L/14 text tower (the tokenizer stays the tiny one)
FULL_ALPHA = dict(TINY_ALPHA_CLIP, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, image_size=224, projection_dim=768)  # AlphaCLIP ViT-L/14
FULL_MLP = dict(TINY_MLP, alpha_clip_embed_dim=768, ip_adapter_embed_dim=1024)

SETS = {
    "tiny": (TINY_UNET, TINY_VAE, TINY_TEXT, TINY_ALPHA_CLIP, TINY_MLP),
    "mid": (MID_UNET, MID_VAE, MID_TEXT, MID_ALPHA, MID_MLP),
    "full": (UNetConfig().to_dict(), VAEConfig().to_dict(), FULL_TEXT, FULL_ALPHA, FULL_MLP),
}


def random_checkpoint(size: str = "tiny", seed: int = 0) -> Checkpoint:
    """Every inference network at `size`, randomly initialized, held in memory (no files but the tokenizer)."""
    unet, vae, text, alpha, mlp = SETS[size]
    folder = Path(tempfile.mkdtemp(prefix=f"clipaway-bench-{size}-"))
    vocab = write_tokenizer(folder / "tokenizer")
    text = dict(text, vocab_size=vocab, eos_token_id=vocab - 1)
    cross = unet["cross_attention_dim"]
    networks = {
        "unet": {"class": "UNet2DConditionModel", "config": unet, "ip_adapter": True},
        "vae": {"class": "AutoencoderKL", "config": vae},
        "text_encoder": {"class": "CLIPTextModel", "config": text},
        "alpha_clip": {"class": "CLIPVisionTransformer", "config": alpha},
        "mlp": {"class": "CLIPAwayMLP", "config": mlp},
        "image_proj": {
            "class": "ImageProjection",
            "config": {"num_tokens": 4, "embed_dim": mlp["ip_adapter_embed_dim"], "cross_attention_dim": cross},
        },
    }  # fmt: skip
    manifest = {"format": "clipaway-jax/1", "networks": networks, "scheduler": SCHEDULER_CONFIG}
    checkpoint = Checkpoint(folder, manifest)
    from clipaway_jax.checkpoint import build_module

    key = jax.random.key(seed)
    for i, (name, entry) in enumerate(networks.items()):
        module, inputs = build_module(entry)
        inputs = inputs or example_inputs(module)
        params = jax.jit(module.init)(jax.random.fold_in(key, i), *inputs)["params"]
        checkpoint.params[name] = jax.tree_util.tree_map(lambda x: x * 0.5, flax.core.meta.unbox(params))
    return checkpoint


def pixel_size(checkpoint: Checkpoint) -> int:
    unet = checkpoint.manifest["networks"]["unet"]["config"]
    vae = checkpoint.manifest["networks"]["vae"]["config"]
    return unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)


def block(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if isinstance(a, jnp.ndarray) else a, x)
