"""The ``fedmf`` command line: one subcommand per module in :mod:`fedmf.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)``,
``run(args) -> int`` and optionally ``validate(args)`` (checks combinations of options,
raising :class:`~fedmf.errors.ConfigError`); adding a command means adding a module to
``COMMANDS``. Every error found before the run (a bad value, a bad combination, an
unwritable output path, a missing optional dependency) is one line on stderr and exit
status 2, before any data is loaded or any key generated. The benchmarks are scripts:
``python bench/NAME.py --quick`` from a clone of the repository.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import FedMFError

COMMANDS = ("data", "train", "attack", "demo")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``fedmf CMD: error: ...``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fedmf",
        description="Privacy-preserving federated recommendation: trainers, secure "
        "aggregation backends and leakage attacks (benchmarks: python bench/NAME.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"fedmf.commands.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(run=module.run, validate=getattr(module, "validate", None), parser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for every refused input, 0 for --help)."""
    try:
        args = build_parser().parse_args(argv)
        if args.validate is not None:
            try:
                args.validate(args)
            except FedMFError as exc:
                args.parser.error(str(exc))
    except SystemExit as exc:  # argparse's exit: --help, --version, or a refused input
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args) or 0)
    except FedMFError as exc:
        print(f"fedmf {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
