"""Pipeline options shared by `remove`, `demo` and `infer`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from clipaway_jax.pipelines.clipaway import BASES, DEFAULT_NEGATIVE_PROMPT, TOKEN_SOURCES, RemovalOptions
from clipaway_jax.pipelines.guidance import MODES
from clipaway_jax.pipelines.images import SIZE_MULTIPLE
from clipaway_jax.pipelines.run import DEFAULT_CACHE_DIR
from clipaway_jax.schedulers import SAMPLERS


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x")) if "x" in text else (int(text),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size {h}x{w}: both sides must be positive multiples of {SIZE_MULTIPLE}")
    return h, w


def at_least(low: int):
    """An argparse type: an integer >= low (a bad value is refused before anything loads or compiles)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def fraction(text: str) -> float:
    """An argparse type: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def add(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=at_least(1), help="denoising steps (default 50, or the checkpoint's own default)")
    g.add_argument("--scheduler", choices=sorted(SAMPLERS),
                   help="sampler (default pndm, as published, or the checkpoint's own default; "
                   "ddim for --base blended)")  # fmt: skip
    g.add_argument("--guidance-scale", type=float,
                   help="classifier-free guidance (default 7.5, as published, or the checkpoint's own default)")
    g.add_argument("--ip-scale", type=float, default=1.0, help="IP-Adapter scale (default 1.0)")
    g.add_argument("--negative-prompt", help="negative text (default IP-Adapter's, as published, or the checkpoint's)")
    g.add_argument("--seed", type=int, default=42, help="seed; per-image noise derives from (seed, image name)")
    g.add_argument(
        "--uncond",
        choices=("mlp", "zeros"),
        default="mlp",
        help="unconditional image tokens: image_proj(MLP(0)) as CLIPAway (default) or image_proj(0)",
    )
    g.add_argument(
        "--posterior",
        choices=("sample", "mode"),
        default="sample",
        help="masked-image VAE latents: sampled (diffusers, default) or the mean",
    )
    g.add_argument("--image-tokens", choices=TOKEN_SOURCES, default="projected",
                   help="IP-Adapter tokens from CLIPAway's projection (default), MLP(e_f) or MLP(e_b) (ablations)")
    g = p.add_argument_group("base model")
    g.add_argument("--base", choices=BASES, default="inpaint",
                   help="inpaint: SD inpainting, as published (default); blended: Blended Latent Diffusion on the "
                   "text-to-image UNet (convert --sd-base), DDIM, with the same image tokens")  # fmt: skip
    g.add_argument("--strength", type=float, default=None, metavar="S",
                   help="inpaint, DDIM: the share of the schedule run (default: the checkpoint's, else 1 = from "
                   "noise, as published); below 1 the sampler starts from the input with its hole filled smoothly "
                   "from the context, noised to that step's level")  # fmt: skip
    g.add_argument("--blend-start", type=fraction, default=0.25, metavar="F",
                   help="blended: the fraction of the timesteps skipped (default 0.25, the reference's)")  # fmt: skip
    g.add_argument("--blend-noise", choices=("current", "previous"), default="current",
                   help="blended: re-noise the source to the current step's t (the reference's) or the previous")
    g = p.add_argument_group("guidance (DCGD)")
    g.add_argument(
        "--guidance-mode",
        choices=MODES,
        default="clipaway",
        help="clipaway (published), dcgd (T_info vs T_mask texts), clipaway+dcgd (both)",
    )
    g.add_argument(
        "--dual-weight",
        type=float,
        default=None,
        metavar="W",
        help="DCGD eq. 6 weight w (eps = w*eps(T_info) + (1-w)*eps(T_mask)); default: --guidance-scale",
    )
    g.add_argument(
        "--unet-variant",
        choices=("inpaint", "dcgd12"),
        default="inpaint",
        help="the 9-channel inpainting UNet, or DCGD's 12-channel one (convert with --dcgd12)",
    )
    g.add_argument("--objects", type=Path, help="object vocabulary file (default: the shipped COCO+ list)")
    g.add_argument("--scenes", type=Path, help="scene vocabulary file (default: the shipped Places selection)")
    g = p.add_argument_group("geometry and masks")
    g.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="model input size N or HxW, multiples of 8 (default: the UNet's, 512 for SD-1.5)",
    )
    g.add_argument(
        "--keep-aspect", action="store_true", help="resize preserving aspect ratio and pad (undone on output)"
    )
    g.add_argument("--dilate-kernel", type=at_least(1), default=5, help="mask dilation kernel (default 5)")
    g.add_argument("--dilate-iterations", type=at_least(0),
                   help="mask dilation iterations; 0 = off (default 5, or the checkpoint's own default)")  # fmt: skip
    g.add_argument(
        "--paste-back",
        type=at_least(0),
        metavar="RADIUS",
        help="paste the unmasked pixels back with a feathered edge of RADIUS px; 0 = off (default 0, as the "
        "original, or the checkpoint's own default: the mini model's is 1)",
    )
    g.add_argument("--seamless", action=argparse.BooleanOptionalAction, default=None,
                   help="with --paste-back: shift the fill by the interpolated difference between the input and "
                   "the result around the hole, so it meets the input's colours (default: the checkpoint's, else "
                   "off)")  # fmt: skip
    g = p.add_argument_group("runtime")
    g.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU")  # fmt: skip
    g.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="persistent XLA compilation cache ('' = off)")


def compute_dtype(name: str) -> str:
    """bfloat16 where it pays (accelerators: half the weight memory and bandwidth, their fast matmul units;
    norms and softmax keep float32 statistics inside the layers), float32 on CPU."""
    import jax

    if name != "auto":
        return name
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


# the published CLIPAway settings
BUILT_IN_DEFAULTS = dict(steps=50, scheduler="pndm", dilate_iterations=5, paste_back=0, guidance_scale=7.5,
                         negative_prompt=DEFAULT_NEGATIVE_PROMPT, strength=1.0, seamless=False)  # fmt: skip


def resolve_defaults(args: argparse.Namespace, manifest: dict) -> None:
    """Flags not given take the checkpoint's `pipeline_defaults` (e.g. the mini model's, scaled to its
    64 px world), else the published settings. A flag given on the command line always wins."""
    own = manifest.get("pipeline_defaults", {})
    if getattr(args, "base", "inpaint") == "blended" and args.scheduler is None:
        args.scheduler = "ddim"  # Blended Latent Diffusion's sampler
    for key, value in BUILT_IN_DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, own.get(key, value))


def options(args: argparse.Namespace) -> RemovalOptions:
    return RemovalOptions(
        steps=args.steps,
        scheduler=args.scheduler,
        uncond=args.uncond,
        dilate_kernel=args.dilate_kernel,
        dilate_iterations=args.dilate_iterations,
        paste_back=args.paste_back,
        seamless=args.seamless and args.paste_back > 0,
        posterior=args.posterior,
        base=args.base,
        blend_start=args.blend_start,
        blend_noise=args.blend_noise,
        strength=args.strength,
    )


def call_kwargs(args: argparse.Namespace) -> dict:
    scale = args.guidance_scale if args.dual_weight is None or args.guidance_mode == "clipaway" else args.dual_weight
    return dict(seed=args.seed, guidance_scale=scale, ip_scale=args.ip_scale, negative_prompt=args.negative_prompt)


def unet_name(args: argparse.Namespace) -> str:
    if getattr(args, "base", "inpaint") == "blended":
        if args.unet_variant != "inpaint":
            raise ValueError("--base blended runs the text-to-image UNet (unet_t2i); --unet-variant applies to "
                             "the inpainting base")  # fmt: skip
        return "unet_t2i"
    return "unet_dcgd12" if args.unet_variant == "dcgd12" else "unet"


def load_pipeline(args: argparse.Namespace, checkpoint=None, mesh=None, rules=None):
    """The pipeline, plus a region describer when the guidance mode needs one."""
    from clipaway_jax.pipelines.clipaway import CLIPAwayPipeline
    from clipaway_jax.pipelines.guidance import needs_descriptions

    describe = needs_descriptions(args.guidance_mode)
    path = checkpoint or args.checkpoint
    extra = ()
    if describe:  # plain CLIP's crop view is optional (the mini model has AlphaCLIP only)
        from clipaway_jax.checkpoint import read_manifest

        extra = ("clip_text", *(["clip_vision"] if "clip_vision" in read_manifest(path)["networks"] else []))
    pipe = CLIPAwayPipeline.from_checkpoint(path, compute_dtype(args.dtype), mesh, unet_name(args), extra, rules)
    resolve_defaults(args, pipe.checkpoint.manifest)
    return pipe, (describer(pipe.checkpoint, args) if describe else None)


def describer(checkpoint, args: argparse.Namespace):
    from clipaway_jax.pipelines.describe import RegionDescriber, read_vocab

    vocab = lambda path: read_vocab(path) if path else None
    cache = (
        os.path.join(os.path.dirname(os.path.expanduser(DEFAULT_CACHE_DIR)), "text_features")
        if args.cache_dir
        else None
    )
    return RegionDescriber(checkpoint, vocab(args.objects), vocab(args.scenes), cache_dir=cache)


def guided_call(pipe, describer, prepared_list, options, args: argparse.Namespace):
    """Run the pipeline on prepared inputs with the chosen guidance; returns (outputs, descriptions)."""
    import numpy as np

    from clipaway_jax.pipelines.guidance import describe_and_choose

    images = np.stack([p.image for p in prepared_list])
    masks = np.stack([p.mask for p in prepared_list])
    kwargs = call_kwargs(args)
    chosen, descriptions = describe_and_choose(
        args.guidance_mode, describer, images, masks, kwargs.pop("negative_prompt"), kwargs.pop("ip_scale")
    )
    names = [p.name for p in prepared_list]
    outputs = pipe.remove(images, masks, names=names, options=options, prompt=chosen.prompts,
                          negative_prompt=chosen.negatives, ip_scale=chosen.ip_scale, token_source=args.image_tokens,
                          **kwargs)  # fmt: skip
    return outputs, descriptions
