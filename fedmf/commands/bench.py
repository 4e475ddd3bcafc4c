"""``fedmf bench NAME [ARGS...]``: run a benchmark script from the repository's ``bench/``."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from ..errors import ConfigError

NAME = "bench"
HELP = "run a benchmark script from bench/ (each takes --quick and --json PATH)"
BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="script name in bench/, e.g. paillier_vs_phe")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")


def available() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py")) if BENCH_DIR.is_dir() else []


def run(args: argparse.Namespace) -> int:
    script = BENCH_DIR / f"{args.name}.py"
    if not script.is_file():
        raise ConfigError(
            f"no benchmark {args.name!r} in {BENCH_DIR} (benchmarks run from a clone of the "
            f"repository); available: {available()}"
        )
    sys.argv = [str(script), *args.script_args]
    runpy.run_path(str(script), run_name="__main__")
    return 0
