"""The ``fedmf`` command line: one subcommand per module in :mod:`fedmf.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; adding a command means adding a module to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import FedMFError

COMMANDS = ("data", "train", "attack", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmf",
        description="Privacy-preserving federated recommendation: trainers, secure "
        "aggregation backends, leakage attacks and benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"fedmf.commands.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except FedMFError as exc:
        print(f"fedmf {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
