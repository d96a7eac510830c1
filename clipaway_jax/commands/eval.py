"""`clipaway-jax eval`: both papers' tables for a folder of results."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from clipaway_jax.commands.infer import add_distributed, add_inputs, init_distributed

DESCRIPTION = textwrap.dedent(
    """\
    Evaluates removal results (an `infer` output folder) against their sources, in the layouts of
    CLIPAway's Table 1 (FID, KID, CMMD, CLIP Dist, CLIP@1/3/5) and DCGD's table (PSNR, SSIM, MAE,
    LPIPS by mask-area bucket, when --ground-truth is given). Writes OUT/metrics.json (with the
    definitions), OUT/per_image.csv, OUT/grid_best.png and OUT/grid_worst.png, and prints both tables.
    Features run jit-compiled on all devices (and hosts); they are cached per image, so a second run
    costs only the statistics. A metric whose network is not in --metrics is skipped with one line.

    examples:
      clipaway-jax eval --results results/ --images coco/val2017 --masks coco/masks \\
          --labels coco/annotations/instances_val2017.json --metrics checkpoints/metrics
      clipaway-jax eval --results results/ --list pairs.csv --ground-truth places/gt \\
          --metrics checkpoints/metrics --grid-metric lpips --out results/eval
      # the metric networks, once (see `clipaway-jax convert --help`):
      clipaway-jax convert --inception pt_inception-2015-12-05-6726825d.pth --alexnet alexnet-owt-7be5be79.pth \\
          --eval-clip openai/clip-vit-base-patch32 --cmmd-clip openai/clip-vit-large-patch14-336 \\
          --out checkpoints/metrics
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="the papers' evaluation tables for a results folder", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--results", type=Path, required=True, help="the results folder (`infer --out`)")
    add_inputs(p)
    p.add_argument("--ground-truth", type=Path, help="folder of ground-truth backgrounds, by file stem (DCGD table)")
    p.add_argument("--labels", type=Path, help="COCO instances JSON or CSV name,class[,x,y,w,h]: boxes and classes")
    p.add_argument("--metrics", type=Path, help="checkpoint with the metric networks (convert --help; default: the "
                   "shipped mini model, whose AlphaCLIP space serves CLIP@k, FD and CMMD)")  # fmt: skip
    p.add_argument("--out", type=Path, help="output folder (default RESULTS/eval)")
    p.add_argument("--vocab", type=Path, help="CLIP@k class names (default: the labels' classes, else the metrics "
                   "checkpoint's vocab/objects.txt, else COCO's 80)")  # fmt: skip
    p.add_argument("--clip-distance", choices=("cosine", "l2"), default="cosine", help="CLIP Dist definition")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100, as torch-fidelity)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="images per KID subset (default 1000)")
    p.add_argument("--inception-resize", choices=("tf1", "pytorch-fid"), default="tf1",
                   help="FID input pipeline: torch-fidelity/torchmetrics (tf1, default) or pytorch-fid")  # fmt: skip
    p.add_argument("--grid-metric", help="rank the best/worst grids by this per-image metric (default lpips or "
                   "clip_distance)")  # fmt: skip
    p.add_argument("--per-device-batch", type=int, default=8, help="images per device per step (default 8)")
    p.add_argument("--cache-dir", type=Path, help="per-image feature cache (default OUT/cache)")
    add_distributed(p)
    p.set_defaults(run=run)


SKIPPED = {
    "inception": "FID and KID (convert --inception pt_inception-2015-12-05-6726825d.pth)",
    "lpips": "LPIPS (convert --alexnet alexnet-owt-7be5be79.pth --lpips alex.pth)",
    "eval_clip_vision": "CLIP Dist and CLIP@k (convert --eval-clip openai/clip-vit-base-patch32)",
    "cmmd_clip_vision": "CMMD (convert --cmmd-clip openai/clip-vit-large-patch14-336)",
}


def run(args: argparse.Namespace) -> int:
    init_distributed(args)
    import jax

    from clipaway_jax.commands.infer import listing
    from clipaway_jax.eval import report
    from clipaway_jax.eval.run import EvalOptions, Evaluator
    from clipaway_jax.eval.samples import pair, read_labels, recorded_bases, result_files
    from clipaway_jax.mini.shipped import checkpoint_or_default

    args.metrics = checkpoint_or_default(args.metrics, "--metrics")
    out = args.out or args.results / "eval"
    results, problems = result_files(args.results)
    labels = read_labels(args.labels) if args.labels else None
    samples, paired_problems = pair(results, listing(args), args.ground_truth, labels, {n for n, _ in problems})
    problems += paired_problems
    if not samples:
        raise ValueError(f"{args.results}: no result pairs with a source image and mask")
    evaluator = Evaluator(args.metrics, EvalOptions(args.per_device_batch, args.inception_resize),
                          args.cache_dir or out / "cache")  # fmt: skip
    lead = jax.process_index() == 0
    for network in evaluator.missing:
        if lead and network in SKIPPED:
            print(f"note: {args.metrics} has no {network!r}: skipping {SKIPPED[network]}")
    share = samples[jax.process_index() :: jax.process_count()]
    records, load_problems = evaluator.evaluate(share, labels, progress=lead)
    problems += load_problems
    if jax.process_count() > 1:
        records, problems = _gather(evaluator, samples, records, problems)
    if not lead:
        return 0
    names = sorted(records)
    metrics = _metrics(args, evaluator, labels, records, names, problems)
    metrics["base"] = recorded_bases(args.results)  # infer --base: inpaint (SD-Inpaint) or blended
    if metrics["base"]:
        print(f"results of base {' + '.join(metrics['base'])} (as infer recorded them)")
    report.write_outputs(out, metrics, records, names)
    _grids(args, out, samples, records, names)
    print(report.markdown_tables(metrics["clipaway_table"], metrics["dcgd_table"], len(names)))
    for note in metrics["notes"]:
        print(f"note: {note}")
    for name, reason in problems:
        print(f"  skipped {name}: {reason}", file=sys.stderr)
    if evaluator.seconds:
        stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in evaluator.seconds.items())
        print(f"seconds on process 0 (compiles included): {stages}")
    print(f"wrote {out / 'metrics.json'}, {out / 'per_image.csv'} ({len(names)} images, {len(problems)} problems)")
    return 0


def _gather(evaluator, samples, records, problems):
    """Every process's records meet in the (shared) cache; process 0 reads them after a barrier."""
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("clipaway-jax eval features written")
    merged = {}
    for sample in samples:
        record = records.get(sample.name) or evaluator.cached_record(sample)
        if record is not None:
            merged[sample.name] = record
    missing = {s.name for s in samples} - set(merged) - {name for name, _ in problems}
    return merged, problems + [(name, "failed on another process") for name in sorted(missing)]


def _metrics(args, evaluator, labels, records, names, problems) -> dict:
    from clipaway_jax.eval import report

    notes, definitions = [], {}
    if evaluator.has("eval_clip_vision") and evaluator.has("eval_clip_text") and names:
        classes = _vocabulary(args, labels)
        report.clip_removal(records, names, _text_features(evaluator, classes), classes, args.clip_distance)
        definitions["CLIP Dist"] = report.CLIP_DISTANCES[args.clip_distance][1]
        definitions["CLIP@k"] = ("% of images whose source object crop's top-1 class (CLIP ViT-B/32 zero-shot, "
                                 f"'a photo of a {{class}}' over {len(classes)} classes) is not in the result crop's "
                                 "top k")  # fmt: skip
    elif evaluator.has("eval_clip_vision"):
        notes.append("CLIP@k skipped: the metrics checkpoint has no eval_clip_text")
    clipaway, kid_notes = report.clipaway_table(records, names, args.kid_subsets, args.kid_subset_size)
    notes += kid_notes
    definitions |= {
        "FID/KID": f"InceptionV3 pool features ({args.inception_resize} input pipeline) of the results vs the "
        "ground truths (or, without them, the source images); KID: unbiased cubic-polynomial MMD^2, "
        f"{args.kid_subsets} subsets of {args.kid_subset_size}",
        "CMMD": "x1000 biased RBF-MMD (sigma 10) of L2-normalized CLIP ViT-L/14@336 embeddings, same sets",
        "FD-CLIP": "Frechet distance of the same CLIP embeddings (the FID formula in CMMD's space), same sets",
        "DCGD": "PSNR/SSIM (11x11 Gaussian, sigma 1.5)/MAE over the whole image in [0, 1], LPIPS-AlexNet v0.1, "
        "against the ground truth; the _mask columns of per_image.csv restrict them to the mask",
    }
    return {
        "images": len(names),
        "clipaway_table": clipaway,
        "dcgd_table": report.dcgd_table(records, names),
        "definitions": definitions,
        "notes": notes,
        "problems": [{"name": n, "reason": r} for n, r in problems],
        "inputs": {"results": str(args.results), "metrics": str(args.metrics), "ground_truth": str(args.ground_truth)},
    }


def _vocabulary(args, labels) -> list[str]:
    from importlib import resources

    from clipaway_jax.pipelines.describe import read_vocab

    if args.vocab:
        return read_vocab(args.vocab)
    if labels is not None and labels.classes:
        return labels.classes
    own = Path(args.metrics) / "vocab" / "objects.txt"  # a checkpoint of another world (the mini one)
    return read_vocab(own if own.is_file() else resources.files("clipaway_jax") / "assets" / "vocab" / "coco80.txt")


def _text_features(evaluator, classes):
    from clipaway_jax.pipelines.describe import encode_vocab
    from clipaway_jax.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(evaluator.checkpoint.tokenizer_path)
    text = evaluator.checkpoint.module("eval_clip_text")
    features = encode_vocab(text, evaluator.params("eval_clip_text"), tokenizer, classes, ("a photo of a {}",))
    return features.features


def _grids(args, out, samples, records, names) -> None:
    import numpy as np

    from clipaway_jax.eval import report
    from clipaway_jax.pipelines.images import read_image, write_png_atomic

    metric = args.grid_metric or ("lpips" if any("lpips" in records[n] for n in names) else "clip_distance")
    by_name = {s.name: s for s in samples}
    for label, chosen in zip(("best", "worst"), report.rank(records, names, metric)):
        rows = []
        for name in chosen:
            sample = by_name[name]
            image, mask = sample.load_source()
            panels = [image, mask, read_image(sample.result)]
            if sample.ground_truth is not None:
                panels.append(read_image(sample.ground_truth))
            rows.append(_thumbnails(panels))
        if rows:
            width = max(r.shape[1] for r in rows)
            rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
            write_png_atomic(out / f"grid_{label}.png", np.concatenate(rows))


def _thumbnails(panels, height: int = 128):
    from clipaway_jax.pipelines.images import grid
    from clipaway_jax.pipelines.run import resize_panel

    width = lambda p: max(1, round(p.shape[1] * height / p.shape[0]))
    return grid([resize_panel(p, (height, width(p))) for p in panels])
