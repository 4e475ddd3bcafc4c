"""``fedmf train``: FedMF over an aggregation backend, with a per-round log and a JSON summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secagg import make_backend
from secagg.errors import SecaggError
from tqdm import tqdm

from ..data import load_split
from ..errors import ConfigError
from ..fcf_command import add_fcf_arguments, run_fcf_command
from ..masked import add_mask_arguments, run_masked
from ..pfedrec_command import add_pfedrec_arguments, run_pfedrec_command
from ..trainer import FedMFTrainer, train_centralized
from .options import add_training_arguments, backend_options, model_config

NAME = "train"
HELP = "train FedMF over an aggregation backend and report accuracy and per-round cost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the centralized baseline with the same model and hyperparameters")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the JSON summary here")
    add_mask_arguments(parser)
    parser.add_argument("--model", choices=("fedmf", "fcf", "pfedrec"), default="fedmf",
                        help="fedmf: explicit ratings (default); fcf: implicit feedback (FCF); "
                             "pfedrec: dual personalization (PFedRec)")
    add_fcf_arguments(parser)
    add_pfedrec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {args.rounds}")
    config = model_config(args)
    try:
        backend = make_backend(args.backend, **backend_options(args.backend_option))
    except (SecaggError, TypeError) as exc:
        raise ConfigError(f"backend {args.backend!r}: {exc}") from exc
    if args.model == "fcf":
        return run_fcf_command(args, backend)
    if args.model == "pfedrec":
        return run_pfedrec_command(args, backend)
    split = load_split(args.dataset, args.split, seed=args.seed)
    if args.mask == "personalized":
        return run_masked(args, split, backend, config)
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
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0
