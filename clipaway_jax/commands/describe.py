"""`clipaway-jax describe IMAGE MASK`: DCGD's region descriptions (T_mask, T_info) with their scores."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

DESCRIPTION = textwrap.dedent(
    """\
    Describes the masked region (T_mask, DCGD's negative prompt) and the rest of the image (T_info, the
    positive prompt) by zero-shot CLIP choice over object and scene vocabularies.

    examples:
      clipaway-jax describe photo.jpg mask.png --checkpoint checkpoints/clipaway
      clipaway-jax describe photo.jpg mask.png --checkpoint checkpoints/clipaway --objects my_objects.txt --json
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("describe", help="describe the masked region and the scene (DCGD)", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("image", type=Path)
    p.add_argument("mask", type=Path)
    p.add_argument("--checkpoint", type=Path,
                   help="converted with --alpha-clip and --clip (default: the shipped mini model)")
    p.add_argument("--objects", type=Path, help="object vocabulary (one name per line)")
    p.add_argument("--scenes", type=Path, help="scene vocabulary (one name per line)")
    p.add_argument("--top-k-mask", type=int, default=1, help="objects joined into T_mask (default 1)")
    p.add_argument("--n-objects", type=int, default=2, help="unmasked objects added to T_info (default 2)")
    p.add_argument("--use-crop", action="store_true", help="also score plain CLIP on the mask's bounding box")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--cache-dir", default="~/.cache/clipaway-jax/text_features", help="vocabulary feature cache")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from clipaway_jax.checkpoint import load_checkpoint
    from clipaway_jax.mini.shipped import checkpoint_or_default
    from clipaway_jax.pipelines.describe import RegionDescriber, read_vocab
    from clipaway_jax.pipelines.run import prepare

    networks = ["alpha_clip", "clip_text"] + (["clip_vision"] if args.use_crop else [])
    checkpoint = load_checkpoint(checkpoint_or_default(args.checkpoint), networks=networks)
    vocab = lambda path: read_vocab(path) if path else None
    describer = RegionDescriber(checkpoint, vocab(args.objects), vocab(args.scenes), cache_dir=args.cache_dir or None)
    prepared = prepare(args.image, args.mask, None, keep_aspect=False)
    (description,) = describer.describe(
        prepared.original[None], prepared.original_mask[None], args.top_k_mask, args.n_objects, args.use_crop
    )
    if args.json:
        print(json.dumps(description.to_dict(), indent=2))
        return 0
    print(f"T_mask (negative prompt): {description.t_mask}")
    print(f"T_info (positive prompt): {description.t_info}")
    for title, scores in (("masked region", description.mask_scores), ("scene", description.scene_scores),
                          ("other objects", description.object_scores)):  # fmt: skip
        print(f"  {title}: " + ", ".join(f"{label} {p:.3f}" for label, p in scores))
    return 0
