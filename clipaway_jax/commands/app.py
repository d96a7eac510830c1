"""`clipaway-jax app`: the interactive removal page (Gradio)."""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

DESCRIPTION = textwrap.dedent(
    """\
    Serves a page to upload or pick an image, brush over an object (or upload a mask), choose the
    guidance (clipaway, dcgd, clipaway+dcgd), steps, scheduler, guidance scale, seed, mask dilation,
    paste-back and aspect handling, press Remove and compare before / after; the result downloads as
    PNG. The checkpoint loads once; requests are queued and each program compiles once.

    With no --checkpoint it serves the shipped mini model (64x64 procedural scenes), or with --tiny the
    tiny random set (removes nothing); the page says which. Needs `pip install 'clipaway-jax[app]'`.

    examples:
      clipaway-jax app                                   # http://127.0.0.1:7860
      clipaway-jax app --checkpoint checkpoints/clipaway --host 0.0.0.0 --port 8080
    """
)


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="the interactive page: brush a mask, see the removal", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="a converted checkpoint (default: the shipped mini model)")
    p.add_argument("--tiny", action="store_true", help="serve the tiny random model set (removes nothing)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--cache-dir", default=None, help="persistent XLA compilation cache ('' = off; default as remove)")
    p.set_defaults(run=main)


def choose_checkpoint(args) -> tuple[Path, str]:
    from clipaway_jax.mini import shipped

    if args.checkpoint is not None:
        return args.checkpoint, "given"
    if not args.tiny and shipped.available():
        return shipped.SHIPPED, "mini"
    from clipaway_jax.commands.demo import build_tiny_checkpoint

    print("building the tiny random model set (removes nothing) ...")
    return build_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="clipaway-jax-tiny-"))), "tiny"


def main(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("the app needs Gradio: pip install 'clipaway-jax[app]'") from None
    from clipaway_jax.commands.app_page import Remover, build, example_files, model_label
    from clipaway_jax.pipelines.run import DEFAULT_CACHE_DIR

    checkpoint, kind = choose_checkpoint(args)
    print(f"model: {checkpoint} ({kind}); loading in the background")
    cache_dir = DEFAULT_CACHE_DIR if args.cache_dir is None else args.cache_dir
    remover = Remover(checkpoint, cache_dir).start()
    examples = example_files(Path(tempfile.mkdtemp(prefix="clipaway-jax-examples-")))
    page = build(remover, model_label(checkpoint, kind), examples)
    page.launch(server_name=args.host, server_port=args.port, show_error=False, share=False,
                allowed_paths=[str(Path(tempfile.gettempdir()))])  # fmt: skip
    return 0
