"""Entry point: `python -m checkpoints.convert --help` (the same as `clipaway-jax convert`)."""

import sys

from clipaway_jax.convert.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
