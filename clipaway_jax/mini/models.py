"""The mini model set: every network of the real pipeline at a size this 2-core CPU trains in minutes.

    alpha_clip      AlphaCLIP ViT (alpha patch embedding), 64 px, patch 8   } one contrastive run: the
    text_encoder    CLIP text tower with projection                        } joint space of the world
    image_encoder   a second CLIP image tower (the ViT-H analogue), its own space and text tower
    vae             AutoencoderKL, 4x downsampling (64 px -> 16x16x4 latents)
    unet            9-channel inpainting UNet with IP-Adapter cross-attention, and image_proj
    mlp             CLIPAway's MLP: alpha_clip space -> image_encoder space
    unet_dcgd12     DCGD's 12-channel UNet, fine-tuned from `unet`

The text tower is SD's text encoder here (SD-1.5 uses OpenAI CLIP's text tower too), DCGD's region
describer's text side (`clip_text`) and the zero-shot classifier of CLIP@k (`eval_clip_text`).
"""

from __future__ import annotations

import json
from pathlib import Path

from clipaway_jax.mini.scenes import BACKGROUNDS, COLOURS, SHAPES

SIZE = 64
IP_TOKENS = 4

TEXT = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=64, hidden_act="quick_gelu")  # fmt: skip
ALPHA_CLIP = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=2,
                  image_size=SIZE, patch_size=8, projection_dim=64, hidden_act="quick_gelu", alpha=True)  # fmt: skip
IMAGE_ENCODER = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                     image_size=SIZE, patch_size=8, projection_dim=80, hidden_act="gelu")  # fmt: skip
VAE = dict(block_out_channels=(16, 32, 64), down_block_types=("DownEncoderBlock2D",) * 3,
           up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4, norm_num_groups=8,
           sample_size=SIZE, scaling_factor=1.0)  # scaling_factor is measured after training  # fmt: skip
# Two levels (16x16 and 8x8 latents, self- and cross-attention at both): 2.8M params, so that the two
# UNets (inpainting and DCGD's) fit the 16 MB the shipped set may take in float16.
UNET = dict(sample_size=SIZE // 4, in_channels=2 * VAE["latent_channels"] + 1, out_channels=VAE["latent_channels"],
            block_out_channels=(64, 96),
            layers_per_block=1, norm_num_groups=16, cross_attention_dim=TEXT["hidden_size"], attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))  # fmt: skip
MLP = dict(number_of_hidden_layers=6, alpha_clip_embed_dim=ALPHA_CLIP["projection_dim"],
           ip_adapter_embed_dim=IMAGE_ENCODER["projection_dim"])  # fmt: skip
# SD-1.5's noise schedule with v-prediction (SD 2's): at 64 px the epsilon model's one-step x0 at t = 950 was
# 13.1 dB, and v-prediction trials filled the mask better (bench/RESULTS.md, "UNet trials for issue #25").
SCHEDULER = dict(_class_name="PNDMScheduler", beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                 clip_sample=False, prediction_type="v_prediction")  # fmt: skip
# The pipeline's flags scaled to 64 px, and no dilation: a mini mask already holds the target's soft edge,
# and a dilation of 1 (5x5, 2 px) filled 1.40 dB worse inside the mask
# on 300 validation scenes (SD's 5 would grow a 64 px mask by 10 px; bench/RESULTS.md, "The mask as
# drawn"). No negative text: the mini text tower never saw IP-Adapter's "monochrome, lowres, ..." (measured on 32 test
# scenes, 25 DDIM steps, guidance 7.5: MAE in the mask 0.248 without it, 0.334 with it).
# Paste-back on (radius 1 px at 64 px): outside the mask the result is the input (published
# checkpoints keep the original's behaviour, off). Guidance 1.5 rather than SD's 7.5: on the first 64 validation
# scenes the retrained model fills the mask at 13.18 / 13.51 / 12.61 / 11.93 dB with guidance 1 / 1.5 / 2.5 / 4
# (bench/RESULTS.md); above it the image tokens' guidance repaints the scene. A retrained model chooses its own.
PIPELINE_DEFAULTS = dict(dilate_iterations=0, steps=25, scheduler="ddim", negative_prompt="", paste_back=1,
                         seamless=True, guidance_scale=1.5)

OBJECT_LABELS = [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]
SCENE_LABELS = list(BACKGROUNDS)


def corpus() -> str:
    words = [*COLOURS, *SHAPES, *BACKGROUNDS, "a", "an", "and", "on", "photo", "of", "the"]
    return " ".join(words * 4) + " monochrome lowres bad anatomy worst quality low quality"


def entries(vocab_size: int) -> dict[str, dict]:
    """Manifest entries (class and config) of the untrained networks; EOS is the vocabulary's last id."""
    text = dict(TEXT, vocab_size=vocab_size, eos_token_id=vocab_size - 1)
    image_proj = dict(num_tokens=IP_TOKENS, embed_dim=MLP["ip_adapter_embed_dim"],
                      cross_attention_dim=UNET["cross_attention_dim"])  # fmt: skip
    return {
        "alpha_clip": {"class": "CLIPVisionTransformer", "config": ALPHA_CLIP},
        "text_encoder": {"class": "CLIPTextModel", "config": text, "with_projection": True},
        "image_encoder": {"class": "CLIPVisionTransformer", "config": IMAGE_ENCODER},
        "encoder_text": {"class": "CLIPTextModel", "config": text | {"projection_dim": IMAGE_ENCODER["projection_dim"]},
                         "with_projection": True},
        "vae": {"class": "AutoencoderKL", "config": VAE},
        "unet": {"class": "UNet2DConditionModel", "config": UNET, "ip_adapter": True},
        "image_proj": {"class": "ImageProjection", "config": image_proj},
        "mlp": {"class": "CLIPAwayMLP", "config": MLP},
    }


def write_skeleton(root: Path) -> Path:
    """A checkpoint with no networks yet: the mini tokenizer, SD's scheduler, the architectures to train
    (`init`), the pipeline defaults for 64 px and this world's vocabularies. `train` stages add the
    networks with `--export`."""
    from clipaway_jax.checkpoint import write_manifest
    from clipaway_jax.tiny import write_tokenizer

    root = Path(root)
    vocab = write_tokenizer(root / "tokenizer", num_merges=120, corpus=corpus())
    manifest = {"networks": {}, "init": entries(vocab), "scheduler": SCHEDULER,
                "pipeline_defaults": PIPELINE_DEFAULTS}  # fmt: skip
    write_manifest(root, json.loads(json.dumps(manifest)))
    (root / "vocab").mkdir(exist_ok=True)
    (root / "vocab" / "objects.txt").write_text("\n".join(OBJECT_LABELS) + "\n")
    (root / "vocab" / "scenes.txt").write_text("\n".join(SCENE_LABELS) + "\n")
    return root
