"""``fedmf data``: locate (or download) a dataset and print its statistics."""

from __future__ import annotations

import argparse
import json

from ..data import DATASETS, SPLITS, load_ratings, load_split, locate
from .options import int_at_least

NAME = "data"
HELP = "locate or download a dataset and print its statistics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", nargs="?", choices=DATASETS, default=None,
                        help="dataset name (none: synthetic)")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the embedded seeded synthetic dataset (offline)")
    parser.add_argument("--split", choices=SPLITS, help="also print the sizes of this split")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the synthetic data / random split")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    dataset = "synthetic" if args.synthetic or args.dataset is None else args.dataset
    stats: dict[str, object] = {"dataset": dataset}
    if dataset != "synthetic":
        stats["path"] = str(locate(dataset, download=not args.no_download))
    stats.update(load_ratings(dataset, seed=args.seed, download=not args.no_download).stats())
    if args.split:
        split = load_split(dataset, args.split, seed=args.seed, download=not args.no_download)
        stats["split"] = {
            "name": split.name,
            "train": len(split.train),
            "test": len(split.test),
            "validation": None if split.validation is None else len(split.validation),
        }
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        print(f"{key:>20}: {value}")
    return 0
