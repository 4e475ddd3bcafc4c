"""``fedmf train --model personalfr``: PersonalFR's options and its run.

The split is the PersonalFR code's: a seeded random 90/10 split of all ratings
(``--split random``, the only one it reads). Local training as the code
(:class:`fedmf.personalfr.FedConfig`); ``--rounds`` is also the cosine schedule's length.
"""

from __future__ import annotations

import argparse

from ..autorec import LOSSES
from ..data import load_split
from ..engine import write_json
from ..personalfr import VARIANTS, FedConfig, make_engine, summarize
from .options import build_backend, int_at_least

TITLE = "PersonalFR (--model personalfr): autoencoder, private encoder, federated decoder"
SPLITS = ("random",)
#: --participation when not given: the code's 10 % of clients a round
PARTICIPATION = FedConfig.fraction


def add_arguments(group) -> None:
    group.add_argument("--feedback", choices=LOSSES, default="explicit",
                       help="explicit: MSE, RMSE; implicit: BCE on rating >= 3.5, NDCG@10")
    group.add_argument("--variant", choices=VARIANTS, default="personalfr",
                       help="personalfr: decoder averaged, encoder private; fedavg: whole autoencoder")
    group.add_argument("--clients", type=int_at_least(2), default=None,
                       help="number of clients over a random user partition (default: one user each)")
    group.add_argument("--eval-every", type=int_at_least(1), default=10,
                       help="test metric every N rounds (and the last)")


def run(args: argparse.Namespace) -> int:
    backend = build_backend(args.backend, args.backend_option)
    split = load_split(args.dataset, "random", test_fraction=0.1, seed=args.seed)
    cfg = FedConfig(loss=args.feedback, variant=args.variant, rounds=args.rounds, fraction=args.participation or PARTICIPATION,
                    batch_users=1 if args.clients is None else 5)
    engine = make_engine(split, backend, config=cfg, clients=args.clients, seed=args.seed,
                         eval_every=args.eval_every)
    print(f"{split.name}: {split.train.n_users} users, {split.train.n_items} items; "
          f"{args.variant} ({args.feedback}) over {backend.name}, {len(engine.trainer.data)} clients")
    key = "test_rmse" if args.feedback == "explicit" else "ndcg_at_10"
    engine.run(args.rounds, progress=True, bar=not args.no_progress, show=(key, "train_loss"))
    summary = summarize(engine)
    summary.update(dataset=args.dataset)
    print(f"best-on-test (optimistic, as the code reports) {key} {summary[key]:.4f} at round "
          f"{summary['best_round']}; last round {summary['last_round'][key]:.4f}; "
          f"{summary['seconds_per_round']:.3f} s/round; active decoder rows per client "
          f"{summary['active_rows_per_client']:.1f}")
    if args.json:
        write_json(args.json, summary)
    return 0
