"""Write the published inference files at full size with random weights (SD-1.5 inpainting, IP-Adapter,
AlphaCLIP ViT-L/14, the MLP; ~5.4 GB) and convert them, for the full-size benchmarks.

    python bench/full_checkpoint.py /tmp/full               # -> /tmp/full/files, /tmp/full/ckpt
    python bench/memory.py --checkpoint /tmp/full/ckpt --sd-folder /tmp/full/files/stable-diffusion-inpainting
    python bench/compile.py --checkpoint /tmp/full/ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipaway_jax.cli import main as cli
from clipaway_jax.tiny import write_full_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to put files/ and ckpt/ (must not hold them already)")
    args = parser.parse_args()
    paths = write_full_size(args.folder / "files")
    flags = [a for name, path in paths.items() for a in (f"--{name.replace('_', '-')}", str(path))]
    raise SystemExit(cli(["convert", *flags, "--out", str(args.folder / "ckpt")]))


if __name__ == "__main__":
    main()
