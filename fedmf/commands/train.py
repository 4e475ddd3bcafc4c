"""``fedmf train``: a federated trainer over an aggregation backend, with a per-round log,
a progress bar and a JSON summary.

The bar (every ``--model``) spans the whole run, rounds x participants, and advances as
the backend absorbs each client's upload (:class:`fedmf.progress.ClientProgress`), so a
long encrypted round shows movement and an ETA; it is drawn only on a terminal, and
``--no-progress`` turns it off. The per-round lines are printed either way.

``--model`` picks the trainer: ``fedmf`` (explicit ratings, this module; with
``--mask personalized`` the masked protocol of :mod:`fedmf.commands.masked`) or one of
:data:`MODELS`, each a module ``fedmf.commands.train_<model>`` that defines ``TITLE``,
``SPLITS`` (the ``--split`` values it reads), ``PARTICIPATION`` (its share of clients
a round when ``--participation`` is not given), ``add_arguments(group)`` and
``run(args) -> int``. A model's options are refused with another ``--model`` (one line,
exit 2), so no option is silently ignored. Adding a trainer to the command line means
adding such a module and its name to :data:`MODELS`.
"""

from __future__ import annotations

import argparse
import importlib

from ..data import SPLITS, load_split
from ..errors import ConfigError
from ..progress import ClientProgress
from ..trainer import FedMFTrainer, train_centralized
from ..warmup import warm_numba_kernels
from . import masked
from .options import (add_training_arguments, build_backend, finite_float, int_at_least, model_config,
                      output_path, write_json)

NAME = "train"
HELP = "train a federated recommender over an aggregation backend; report accuracy and per-round cost"

#: --model values besides fedmf, each a module fedmf.commands.train_<name>
MODELS = ("fcf", "pfedrec", "personalfr")
#: FedMF's own options (besides the masked protocol's): refused with another --model
FEDMF_OPTIONS = ("mode", "factors", "lr", "reg", "order", "no_biases", "no_baseline")


def _model_module(name: str):
    return importlib.import_module(f"fedmf.commands.train_{name}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--model", choices=("fedmf", *MODELS), default="fedmf",
                        help="fedmf: explicit-rating FedMF; " + "; ".join(
                            f"{m}: {_model_module(m).TITLE}" for m in MODELS))
    parser.add_argument("--rounds", type=int_at_least(1), default=60, help="training rounds")
    parser.add_argument("--participation", type=finite_float(low=0, strict=True, high=1), default=None,
                        help="share of clients in each round, seeded (default: the model's; "
                             + ", ".join(f"{m} {_model_module(m).PARTICIPATION:g}" for m in MODELS)
                             + "; FedMF trains every user)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="fedmf: skip the centralized baseline with the same model and hyperparameters")
    parser.add_argument("--json", type=output_path, metavar="PATH", help="write the JSON summary here")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is drawn only on a terminal and advances per client "
                             "upload over the whole run, with an ETA); the per-round lines stay")
    owned = {"fedmf": set(FEDMF_OPTIONS) | _dests_added(parser, masked.add_arguments, parser)}
    for name in MODELS:
        module = _model_module(name)
        group = parser.add_argument_group(module.TITLE, f"options of --model {name} only")
        owned[name] = _dests_added(parser, module.add_arguments, group)
    split = next(a for a in parser._actions if a.dest == "split")
    split.choices = tuple(dict.fromkeys((*SPLITS, *(s for m in MODELS for s in _model_module(m).SPLITS))))
    split.default = None
    split.help = ("train / test split (default: u1 for --model fedmf, else the model's first: "
                  + ", ".join(f"{m} {_model_module(m).SPLITS[0]}" for m in MODELS) + ")")
    for name in MODELS:
        owned[name].add("participation")
    parser.set_defaults(owned_options=owned)


def _dests_added(parser: argparse.ArgumentParser, add, target) -> set[str]:
    """The option names (dests) that ``add(target)`` adds to ``parser``."""
    before = {action.dest for action in parser._actions}
    add(target)
    return {action.dest for action in parser._actions} - before


def validate(args: argparse.Namespace) -> None:
    mine = args.owned_options[args.model]
    for model, dests in args.owned_options.items():
        for dest in sorted(dests - mine):
            if getattr(args, dest) != args.parser.get_default(dest):
                owners = [m for m, d in args.owned_options.items() if dest in d]
                flag = "--" + dest.replace("_", "-")
                raise ConfigError(f"{flag} applies to --model {' / '.join(owners)} only, not --model {args.model}")
    splits = SPLITS if args.model == "fedmf" else _model_module(args.model).SPLITS
    if args.split is None:
        args.split = "u1" if args.model == "fedmf" else splits[0]
    if args.split not in splits:
        raise ConfigError(f"--model {args.model} reads --split {', '.join(splits)}, got --split {args.split}")
    if args.model == "fedmf":
        masked.validate(args)


def run(args: argparse.Namespace) -> int:
    if args.model != "fedmf":
        return _model_module(args.model).run(args)
    if args.mask == "personalized":
        return masked.run(args)
    return _train_fedmf(args)


def _train_fedmf(args: argparse.Namespace) -> int:
    config = model_config(args)
    backend = build_backend(args.backend, args.backend_option)
    split = load_split(args.dataset, args.split, seed=args.seed)
    warm_numba_kernels()
    trainer = FedMFTrainer(split, backend, config=config, mode=args.mode, seed=args.seed)
    print(f"{split.name}: {split.train.n_users} users, {split.train.n_items} items, "
          f"{len(split.train)} train / {len(split.test)} test ratings; backend {backend.name}, "
          f"mode {args.mode}; setup {trainer.setup_seconds:.2f} s")
    with ClientProgress(args.rounds, len(trainer.participants()), enabled=not args.no_progress) as bar:
        for _ in range(args.rounds):
            log = trainer.run_round(progress=bar.client_done)
            bar.round_done(log.line(), rmse=f"{log.test_rmse:.4f}")
    summary = trainer.result().summary()
    summary.update(dataset=args.dataset, split=args.split)
    if not args.no_baseline and config.order == "paper":
        baseline = train_centralized(split, config, args.rounds, seed=args.seed)[-1]
        summary["centralized_test_rmse"] = baseline
        print(f"centralized baseline (same model, hyperparameters, init): rmse {baseline:.4f}")
    print(f"federated ({backend.name}, {args.mode}): rmse {summary['test_rmse']:.4f}, "
          f"{summary['seconds_per_round']:.3f} s/round")
    if args.json:
        write_json(args.json, summary)
    return 0
