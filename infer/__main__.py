import sys

from clipaway_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
