"""``fedmf demo``: the README's main job, offline on synthetic data.

Trains FedMF for a few rounds with the plain backend and with packed Paillier
(2048-bit key), prints accuracy and per-round overhead side by side, then shows
what an honest-but-curious server learns from plain uploads.
"""

from __future__ import annotations

import argparse

from secagg import make_backend
from tqdm import tqdm

from ..data import random_holdout, synthetic_ratings
from ..trainer import FedMFTrainer
from ..warmup import warm_numba_kernels
from .options import int_at_least

NAME = "demo"
HELP = "offline demo: accuracy and per-round cost of plain vs packed-Paillier FedMF, then leakage"
MIN_USERS = 3  # the SecAgg leakage demonstration needs a threshold: n >= 3
MIN_ITEMS = 2  # the synthetic generator needs two items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int_at_least(MIN_USERS), default=100, help="synthetic users")
    parser.add_argument("--items", type=int_at_least(MIN_ITEMS), default=200, help="synthetic items")
    parser.add_argument("--rounds", type=int_at_least(1), default=5, help="training rounds per backend")
    parser.add_argument("--key-bits", type=int, default=2048, choices=(2048, 3072), help="Paillier key size")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the synthetic data and model")


def run(args: argparse.Namespace) -> int:
    ratings = synthetic_ratings(n_users=args.users, n_items=args.items, density=0.1,
                                min_per_user=10, seed=args.seed)
    split = random_holdout(ratings, 0.2, seed=args.seed, name="synthetic")
    print(f"synthetic data: {args.users} users, {args.items} items, {len(split.train)} training "
          f"ratings; FullText FedMF, {args.rounds} rounds per backend\n")
    backends = [make_backend("plain"),
                make_backend("paillier_packed", key_bits=args.key_bits, out_of_range="clip")]
    warm_numba_kernels()
    rows = []
    for backend in backends:
        trainer = FedMFTrainer(split, backend, seed=args.seed)
        for _ in tqdm(range(args.rounds), desc=backend.name, unit="round", leave=False):
            trainer.run_round()
        s = trainer.result().summary()
        rows.append((backend.name, s["test_rmse"], s["client_seconds_per_round"],
                     s["server_seconds_per_round"], s["bytes_up_per_client"] / 1024,
                     trainer.setup_seconds))
    print(f"{'backend':<16}{'test RMSE':>10}{'client s/round':>16}{'server s/round':>16}"
          f"{'KiB up/client':>15}{'setup s':>9}")
    for name, rmse, client, server, kib, setup in rows:
        print(f"{name:<16}{rmse:>10.4f}{client:>16.4f}{server:>16.4f}{kib:>15.1f}{setup:>9.2f}")
    print(f"\nRMSE difference packed Paillier - plain: {rows[1][1] - rows[0][1]:+.5f} "
          "(fixed-point quantization only)")
    from attacks.demo import leakage_demo

    print("\n" + leakage_demo(split, seed=args.seed))
    return 0
