"""Command-line options shared by the training, attack and demo commands."""

from __future__ import annotations

import argparse

from secagg import available_backends

from ..data import DATASETS, SPLITS
from ..errors import ConfigError
from ..model import ORDERS, ModelConfig
from ..trainer import MODES


def add_training_arguments(parser: argparse.ArgumentParser, *, dataset: str = "synthetic") -> None:
    parser.add_argument("--dataset", choices=DATASETS, default=dataset)
    parser.add_argument("--split", choices=SPLITS, default="u1")
    parser.add_argument("--backend", default="plain",
                        help=f"aggregation backend: one of {', '.join(available_backends())}")
    parser.add_argument("-o", "--backend-option", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option, e.g. -o key_bits=2048 -o min_inputs=10 (repeatable)")
    parser.add_argument("--mode", choices=MODES, default="full",
                        help="full: FullText (hides the rated set); part: PartText (cheaper, leaks it)")
    parser.add_argument("--factors", type=int, default=ModelConfig.factors)
    parser.add_argument("--lr", type=float, default=ModelConfig.lr)
    parser.add_argument("--reg", type=float, default=ModelConfig.reg)
    parser.add_argument("--order", choices=ORDERS, default=ModelConfig.order,
                        help="local update order: the paper's or the public code's sequential SGD")
    parser.add_argument("--no-biases", action="store_true", help="plain MF without user/item biases")
    parser.add_argument("--seed", type=int, default=0)


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(factors=args.factors, lr=args.lr, reg=args.reg,
                       biases=not args.no_biases, order=args.order)


def backend_options(pairs: list[str]) -> dict[str, object]:
    """Parse ``KEY=VALUE`` pairs; values become int, float or bool where they look like one."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"backend option must look like KEY=VALUE, got {pair!r}")
        options[key.strip()] = _parse_value(raw.strip())
    return options


def _parse_value(raw: str) -> object:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw
