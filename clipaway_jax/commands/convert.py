"""`clipaway-jax convert` (also `python -m checkpoints.convert`)."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

EXAMPLES = textwrap.dedent(
    """\
    Converts the published CLIPAway files into one checkpoint (Orbax + manifest.json) that
    `remove`, `infer` and `train` load fast, sharded, without torch.

    example (the published file names):
      clipaway-jax convert \\
          --sd-inpaint botp/stable-diffusion-v1-5-inpainting \\
          --ip-adapter ckpts/IPAdapter/ip-adapter_sd15.bin \\
          --alpha-clip ckpts/AlphaCLIP/clip_l14_grit+mim_fultune_6xe.pth \\
          --mlp ckpts/CLIPAway/model.safetensors \\
          --image-encoder ckpts/IPAdapter/image_encoder \\
          --clip openai/clip-vit-large-patch14 \\
          --out checkpoints/clipaway

    only what you give is converted; e.g. the MLP alone:
      clipaway-jax convert --mlp ckpts/CLIPAway/model.safetensors --out checkpoints/mlp-only
    """
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sd-inpaint", type=Path, metavar="DIR", help="diffusers SD-1.5 inpainting folder")
    p.add_argument("--ip-adapter", type=Path, metavar="FILE", help="ip-adapter_sd15.bin or .safetensors")
    p.add_argument("--alpha-clip", type=Path, metavar="FILE", help="AlphaCLIP visual .pth (ViT-L/14)")
    p.add_argument("--mlp", type=Path, metavar="FILE", help="CLIPAway MLP model.safetensors")
    p.add_argument("--image-encoder", type=Path, metavar="DIR", help="IP-Adapter image_encoder/ (MLP training)")
    p.add_argument("--clip", type=Path, metavar="DIR", help="OpenAI CLIP ViT-L/14 CLIPModel folder (DCGD)")
    p.add_argument(
        "--dcgd12",
        action="store_true",
        help="also store DCGD's 12-channel UNet (unet_dcgd12), initialized from the inpainting UNet",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint directory to create")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="stored param dtype")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from clipaway_jax.convert.published import Sources, convert

    sources = Sources(
        args.sd_inpaint, args.ip_adapter, args.alpha_clip, args.mlp, args.image_encoder, args.clip, args.dcgd12
    )
    start = time.perf_counter()
    manifest = convert(sources, args.out, dtype=args.dtype, force=args.force)
    names = ", ".join(manifest["networks"])
    print(f"wrote {args.out} ({names}; {args.dtype}) in {time.perf_counter() - start:.1f} s")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="published CLIPAway files -> one checkpoint",
        description=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(run=run)


def main(argv: list[str]) -> int:
    """`python -m checkpoints.convert ARGS` runs `clipaway-jax convert ARGS`."""
    from clipaway_jax.cli import main as cli_main

    return cli_main(["convert", *argv])
