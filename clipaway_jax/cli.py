"""`clipaway-jax` command line: one subcommand per job; errors are one line unless --debug."""

from __future__ import annotations

import argparse
import sys
import textwrap


def _demo(sub):
    p = sub.add_parser(
        "demo",
        help="run the built-in tiny model set end to end",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Runs the networks on the built-in tiny model set (seeded random weights) and prints what it did.
            Random weights remove nothing: the demo shows that every stage runs, compiled, on this machine.

            examples:
              clipaway-jax demo
              clipaway-jax demo --out demo_out
            """
        ),
    )
    p.add_argument("--out", default="demo_out", help="folder for the demo's outputs (default: demo_out)")
    p.set_defaults(run=lambda args: __import__("clipaway_jax.demo", fromlist=["main"]).main(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipaway-jax",
        description="CLIPAway object removal in JAX/Flax.",
        epilog="Run `clipaway-jax COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo(sub)
    from clipaway_jax.convert.cli import add_parser as add_convert

    add_convert(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
