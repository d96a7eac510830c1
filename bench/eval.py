"""Time `clipaway-jax eval` on N results at S x S with the full-size metric networks (random weights):
FID Inception, LPIPS-AlexNet, CLIP ViT-B/32 (text + vision) and CLIP ViT-L/14@336 (CMMD).

    python bench/eval.py --images 1000 --size 512        # everything, one run
    python bench/eval.py --images 64                     # `eval` prints seconds per stage: extrapolate

The metric checkpoint is written by Flax init (no torch needed: runs as is on an accelerator host).
Prints the total wall time of the command; `eval` itself prints its seconds per stage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipaway_jax.checkpoint import build_module, save_network, write_manifest  # noqa: E402
from clipaway_jax.tiny import write_tokenizer  # noqa: E402

B32 = dict(hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12, num_attention_heads=12,
           image_size=224, patch_size=32, hidden_act="quick_gelu")  # fmt: skip
L14_336 = dict(hidden_size=1024, intermediate_size=4096, projection_dim=768, num_hidden_layers=24,
               num_attention_heads=16, image_size=336, patch_size=14, hidden_act="quick_gelu")  # fmt: skip
B32_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                max_position_embeddings=77, projection_dim=512, hidden_act="quick_gelu")  # fmt: skip


def metrics_checkpoint(root: Path) -> Path:
    vocab = write_tokenizer(root / "tokenizer")
    networks = {
        "inception": {"class": "FIDInceptionV3", "config": {}},
        "lpips": {"class": "LPIPS", "config": {}},
        "eval_clip_vision": {"class": "CLIPVisionTransformer", "config": B32},
        "eval_clip_text": {"class": "CLIPTextModel", "with_projection": True,
                           "config": dict(B32_TEXT, vocab_size=vocab, eos_token_id=vocab - 1)},  # fmt: skip
        "cmmd_clip_vision": {"class": "CLIPVisionTransformer", "config": L14_336},
    }
    for i, (name, entry) in enumerate(networks.items()):
        module, inputs = build_module(entry)
        if not inputs:
            from clipaway_jax.models import example_inputs

            inputs = example_inputs(module)
        params = jax.jit(module.init)(jax.random.key(i), *inputs)["params"]
        params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), _unbox(params))
        if name == "inception":  # BatchNorm statistics near identity keep 50 layers in range
            params = jax.tree_util.tree_map_with_path(_bn_like, params)
        save_network(root, name, params)
        entry["sources"] = [{"path": "random", "sha256": f"random-{i}"}]
    write_manifest(root, {"dtype": "float32", "networks": networks, "tokenizer": "tokenizer"})
    return root


def _unbox(tree):
    import flax

    return flax.core.meta.unbox(tree)


def _bn_like(path, leaf):
    name = path[-1].key
    return np.full_like(leaf, 1.0) if name in ("var", "scale") else np.zeros_like(leaf) if name == "mean" else leaf


def write_results(root: Path, count: int, size: int) -> Path:
    """Sources, masks (2% to 38% of the image), ground truths and results, written by a thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    for sub in ("images", "masks", "gt", "results"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: _write_one(root, i, size), range(count)))
    return root


def _write_one(root: Path, i: int, size: int) -> None:
    rng = np.random.RandomState(i)
    yy, xx = np.mgrid[:size, :size] / size
    phase = rng.rand(3) * 6
    truth = 0.5 + 0.4 * np.stack([np.sin(5 * xx + phase[0]), np.cos(4 * yy + phase[1]), np.sin(3 * xx + phase[2])], -1)
    side = int(size * np.sqrt(0.02 + 0.36 * (i % 37) / 36))
    y, x = rng.randint(0, size - side + 1, 2)
    image, result = truth.copy(), truth.copy()
    image[y : y + side, x : x + side] = rng.rand(3)
    result[y : y + side, x : x + side] *= 0.9
    mask = np.zeros((size, size), np.uint8)
    mask[y : y + side, x : x + side] = 255
    save = lambda array, path: Image.fromarray(array).save(path, compress_level=1)
    for sub, array in (("images", image), ("gt", truth), ("results", result)):
        save(np.round(array * 255).astype(np.uint8), root / sub / f"{i:05d}.png")
    save(mask, root / "masks" / f"{i:05d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--per-device-batch", type=int, default=8)
    p.add_argument("--work", type=Path, default=None, help="folder for the files (default: a temporary one)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="clipaway-bench-eval-"))
    start = time.perf_counter()
    ckpt, run = work / "metrics", work / "run"
    if not (ckpt / "manifest.json").exists():
        metrics_checkpoint(ckpt)
    if not (run / "gt").exists():
        write_results(run, args.images, args.size)
    print(f"prepared {args.images} images ({args.size}px) and the networks in {time.perf_counter() - start:.0f} s")
    from clipaway_jax.cli import main as cli

    start = time.perf_counter()
    code = cli(["eval", "--results", str(run / "results"), "--images", str(run / "images"), "--masks",
                str(run / "masks"), "--ground-truth", str(run / "gt"), "--metrics", str(ckpt), "--out",
                str(work / "out"), "--per-device-batch", str(args.per_device_batch),
                "--kid-subset-size", str(min(1000, args.images))])  # fmt: skip
    total = time.perf_counter() - start
    device = jax.devices()[0].device_kind
    print(f"eval of {args.images} images at {args.size}x{args.size}: {total:.1f} s wall "
          f"({total / args.images * 1000:.0f} ms/image) on {jax.device_count()} x {device}; exit {code}")  # fmt: skip


if __name__ == "__main__":
    main()
