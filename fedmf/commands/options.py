"""Command-line options shared by the commands, and the argparse types that check values.

Every value is checked while the command line is parsed (an argparse error, exit 2),
before any data is loaded or any key generated: numbers by the ``type=`` functions
below, output paths by :func:`output_path` (the folder must exist and the file be
writable), combinations by each command's ``validate(args)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
from pathlib import Path

from secagg import available_backends, make_backend
from secagg.backend import backend_options as accepted_options
from secagg.errors import SecaggError

from ..data import DATASETS, SPLITS
from ..errors import ConfigError
from ..model import ORDERS, ModelConfig
from ..trainer import MODES


def int_at_least(low: int):
    """argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(*, low: float = -math.inf, strict: bool = False, high: float = math.inf):
    """argparse type: a finite float >= ``low`` (> ``low`` with ``strict``) and <= ``high``;
    no nan, no inf."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def output_path(text: str) -> Path:
    """argparse type: a file path that can be written now (its folder exists, no folder is
    created, and opening it for writing succeeds), so a run never fails at its end."""
    path = Path(text).expanduser()
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(path.parent)!r} does not exist (it is not created)")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink()
    return path


def plot_path(text: str) -> Path:
    """argparse type: an :func:`output_path` for a figure; matplotlib must be installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError("needs matplotlib: pip install matplotlib (or the [bench] extra)")
    return output_path(text)


def write_json(path: Path, data: dict, default=None) -> None:
    """Write ``data`` as indented JSON to a path already checked by :func:`output_path`."""
    path.write_text(json.dumps(data, indent=2, default=default))


def add_training_arguments(parser: argparse.ArgumentParser, *, dataset: str = "synthetic") -> None:
    parser.add_argument("--dataset", choices=DATASETS, default=dataset, help="rating data set")
    parser.add_argument("--split", choices=SPLITS, default="u1",
                        help="train / test split (GroupLens files for ml-100k, seeded holdouts otherwise)")
    parser.add_argument("--backend", choices=available_backends(), default="plain",
                        help="aggregation backend")
    parser.add_argument("-o", "--backend-option", action="append", default=[], metavar="KEY=VALUE",
                        type=_backend_option,
                        help="backend option, e.g. -o key_bits=2048 -o min_inputs=10 (repeatable); "
                             "backends with a workers option use all cores unless -o workers=N")
    parser.add_argument("--mode", choices=MODES, default="full",
                        help="full: FullText (hides the rated set); part: PartText (uploads only rated "
                             "rows and reveals them; cheaper only where the backend aggregates sparsely)")
    parser.add_argument("--factors", type=int_at_least(1), default=ModelConfig.factors, help="latent factors")
    parser.add_argument("--lr", type=finite_float(low=0, strict=True), default=ModelConfig.lr,
                        help="learning rate")
    parser.add_argument("--reg", type=finite_float(low=0), default=ModelConfig.reg, help="L2 regularisation")
    parser.add_argument("--order", choices=ORDERS, default=ModelConfig.order,
                        help="local update order: the paper's or the public code's sequential SGD")
    parser.add_argument("--no-biases", action="store_true", help="plain MF without user/item biases")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of data split and model init")


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(factors=args.factors, lr=args.lr, reg=args.reg,
                       biases=not args.no_biases, order=args.order)


def backend_options(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """The parsed ``-o KEY=VALUE`` pairs as keyword options (a repeated key is refused)."""
    options: dict[str, object] = {}
    for key, value in pairs:
        if key in options:
            raise ConfigError(f"backend option {key!r} given twice")
        options[key] = value
    return options


def build_backend(name: str, pairs: list[tuple[str, object]], **fixed):
    """Construct backend ``name`` with the ``-o`` options (and ``fixed`` ones); a bad name
    or option is a :class:`ConfigError` raised before any training.

    Training uploads are clipped to the backend's range (``out_of_range="clip"``, counted
    in ``info["clipped"]``) unless ``-o out_of_range=raise`` asks for an error instead. A
    backend that can run its clients in processes uses every core this process may run
    on unless ``-o workers=N`` says otherwise (results do not depend on it)."""
    defaults: dict[str, object] = {"out_of_range": "clip"}
    if name in available_backends() and "workers" in accepted_options(name):
        defaults["workers"] = usable_cores()
    try:
        return make_backend(name, **(defaults | fixed | backend_options(pairs)))
    except (SecaggError, TypeError) as exc:
        raise ConfigError(f"backend {name!r}: {exc}") from exc


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _backend_option(text: str) -> tuple[str, object]:
    """argparse type of ``-o``: ``KEY=VALUE``; values become int, float or bool where they look like one."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"must look like KEY=VALUE, got {text!r}")
    return key.strip(), _parse_value(raw.strip())


def _parse_value(raw: str) -> object:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw
