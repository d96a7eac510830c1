"""Entry point: `python -m checkpoints.convert --help` (the same as `clipaway-jax convert`)."""

import sys

from clipaway_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
