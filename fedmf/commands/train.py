"""``fedmf train``: FedMF over an aggregation backend, with a per-round log and a JSON summary.

``--mask personalized`` trains on personally masked targets and measures the leakage
(:mod:`fedmf.commands.masked`). A further model is one more ``_train_*`` function
chosen in :func:`run`.
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from ..data import load_split
from ..trainer import FedMFTrainer, train_centralized
from ..warmup import warm_numba_kernels
from . import masked
from .options import add_training_arguments, build_backend, int_at_least, model_config, output_path, write_json

NAME = "train"
HELP = "train FedMF over an aggregation backend and report accuracy and per-round cost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--rounds", type=int_at_least(1), default=60, help="training rounds")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the centralized baseline with the same model and hyperparameters")
    parser.add_argument("--json", type=output_path, metavar="PATH", help="write the JSON summary here")
    masked.add_arguments(parser)


def validate(args: argparse.Namespace) -> None:
    masked.validate(args)


def run(args: argparse.Namespace) -> int:
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
    with tqdm(range(args.rounds), desc="rounds", unit="round") as bar:
        for _ in bar:
            log = trainer.run_round()
            tqdm.write(log.line())
            bar.set_postfix(rmse=f"{log.test_rmse:.4f}")
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
