"""`clipaway-jax` command line: one subcommand per job; errors are one line unless --debug."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipaway-jax",
        description="CLIPAway object removal in JAX/Flax.",
        epilog="Run `clipaway-jax COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    from clipaway_jax.commands import app, convert, data, demo, describe, infer, remove, train
    from clipaway_jax.commands import eval as evaluate

    for command in (demo, remove, describe, infer, evaluate, train, convert, data, app):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "overrides_allowed", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra and not extra[0].startswith("--config."):
        parser.error(f"unrecognized arguments: {' '.join(extra)} (a config field is set with --config.KEY=VALUE)")
    args.overrides = extra  # `train`: --config.KEY=VALUE, applied by ml_collections' config_flags
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("clipaway-jax: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"clipaway-jax: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
