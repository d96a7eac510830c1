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

    example (the published files; Hub ids are fetched, or read from the local cache offline):
      clipaway-jax convert \\
          --sd-inpaint botp/stable-diffusion-v1-5-inpainting \\
          --ip-adapter h94/IP-Adapter \\
          --alpha-clip ckpts/AlphaCLIP/clip_l14_grit+mim_fultune_6xe.pth \\
          --mlp ckpts/CLIPAway/model.safetensors \\
          --image-encoder h94/IP-Adapter \\
          --clip openai/clip-vit-large-patch14 \\
          --out checkpoints/clipaway

    the Blended Latent Diffusion base (--base blended) adds SD-1.5's text-to-image UNet:
      clipaway-jax convert --sd-inpaint botp/stable-diffusion-v1-5-inpainting \
          --sd-base stable-diffusion-v1-5/stable-diffusion-v1-5 --ip-adapter h94/IP-Adapter ... \
          --out checkpoints/clipaway

    only what you give is converted; e.g. the MLP alone:
      clipaway-jax convert --mlp ckpts/CLIPAway/model.safetensors --out checkpoints/mlp-only

    the evaluation networks (for `clipaway-jax eval`; pip install --no-deps lpips provides alex.pth):
      clipaway-jax convert --inception pt_inception-2015-12-05-6726825d.pth \\
          --alexnet alexnet-owt-7be5be79.pth --eval-clip openai/clip-vit-base-patch32 \\
          --cmmd-clip openai/clip-vit-large-patch14-336 --out checkpoints/metrics

    Hub ids: OWNER/NAME[@REVISION][:PATH/IN/REPO]. Only the files that are converted are downloaded
    (one weights file per component); HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE are honoured.
    `--ip-adapter h94/IP-Adapter` means h94/IP-Adapter:models/ip-adapter_sd15.bin and
    `--image-encoder h94/IP-Adapter` means h94/IP-Adapter:models/image_encoder.

    Not on the Hub (Google Drive links in the CLIPAway and AlphaCLIP READMEs; their download script
    is download_pretrained_models.sh, gdown ids below):
      --alpha-clip  clip_l14_grit+mim_fultune_6xe.pth   AlphaCLIP ViT-L/14, GRIT-1M + MaskImageNet
                    (gdown id 1JfzOTvjf0tqBtKWwpBJtjYxdHi-06dbk)
      --mlp         model.safetensors                   the CLIPAway MLP (ckpts/CLIPAway/)
                    (gdown id 1lFHAT2dF5GVRJLxkF1039D53gixHXaTx)
    """
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sd-inpaint", metavar="DIR|HUB_ID", help="diffusers SD-1.5 inpainting folder")
    p.add_argument("--sd-base", metavar="DIR|HUB_ID",
                   help="diffusers text-to-image SD-1.5 folder: its UNet (with --ip-adapter's attention) becomes "
                   "unet_t2i, the UNet of the Blended Latent Diffusion base (--base blended)")  # fmt: skip
    p.add_argument("--ip-adapter", metavar="FILE|HUB_ID", help="ip-adapter_sd15.bin or .safetensors")
    p.add_argument("--alpha-clip", type=Path, metavar="FILE", help="AlphaCLIP visual .pth (ViT-L/14)")
    p.add_argument("--mlp", type=Path, metavar="FILE", help="CLIPAway MLP model.safetensors")
    p.add_argument("--image-encoder", metavar="DIR|HUB_ID", help="IP-Adapter image_encoder/ (MLP training)")
    p.add_argument("--clip", metavar="DIR|HUB_ID", help="OpenAI CLIP ViT-L/14 CLIPModel folder (DCGD)")
    p.add_argument(
        "--dcgd12",
        action="store_true",
        help="also store DCGD's 12-channel UNet (unet_dcgd12), initialized from the inpainting UNet",
    )
    p.add_argument(
        "--dcgd12-from-base",
        action="store_true",
        help="--sd-inpaint is a text-to-image SD-1.5 (4-channel UNet): store only DCGD's 12-channel UNet "
        "initialized from it (for fine-tuning), no inpainting UNet",
    )
    ev = p.add_argument_group("evaluation networks (clipaway-jax eval)")
    ev.add_argument("--inception", type=Path, metavar="FILE", help="pt_inception-2015-12-05-6726825d.pth (FID, KID)")
    ev.add_argument("--alexnet", type=Path, metavar="FILE", help="torchvision's alexnet-owt-7be5be79.pth (LPIPS)")
    lpips_help = "the lpips package's weights/v0.1/alex.pth (default: an installed lpips package's)"
    ev.add_argument("--lpips", type=Path, metavar="FILE", help=lpips_help)
    ev.add_argument("--eval-clip", metavar="DIR|HUB_ID", help="CLIP ViT-B/32 (openai/clip-vit-base-patch32): CLIP@k")
    ev.add_argument("--cmmd-clip", metavar="DIR|HUB_ID",
                    help="CLIP ViT-L/14@336 (openai/clip-vit-large-patch14-336): CMMD")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint directory to create")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="stored param dtype")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from clipaway_jax.convert import hub
    from clipaway_jax.convert.published import Sources, convert

    sources = Sources(
        sd_inpaint=hub.resolve(args.sd_inpaint, "sd"),
        sd_base=hub.resolve(args.sd_base, "sd"),
        ip_adapter=hub.resolve(args.ip_adapter, "ip_adapter"),
        alpha_clip=args.alpha_clip,
        mlp=args.mlp,
        image_encoder=hub.resolve(args.image_encoder, "transformers"),
        clip=hub.resolve(args.clip, "transformers"),
        dcgd12=args.dcgd12,
        dcgd12_from_base=args.dcgd12_from_base,
        inception=args.inception,
        alexnet=args.alexnet,
        lpips=args.lpips or (installed_lpips_weights() if args.alexnet else None),
        eval_clip=hub.resolve(args.eval_clip, "transformers"),
        cmmd_clip=hub.resolve(args.cmmd_clip, "transformers"),
    )
    start = time.perf_counter()
    manifest = convert(sources, args.out, dtype=args.dtype, force=args.force)
    names = ", ".join(manifest["networks"])
    print(f"wrote {args.out} ({names}; {args.dtype}) in {time.perf_counter() - start:.1f} s")
    return 0


def installed_lpips_weights() -> Path | None:
    """weights/v0.1/alex.pth inside an installed `lpips` package, found without importing it (its
    import needs torchvision)."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="published CLIPAway files -> one checkpoint",
        description=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(run=run)
