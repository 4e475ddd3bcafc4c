"""Personalized masks + adaptive encryption (our FedMMF reconstruction) on MovieLens 100K u1.

Three measurements, each against its peer in the same run:

1. accuracy: mask + FedMF vs plain FedMF (plain backend, same model, seed, rounds);
2. leakage: the gradient-leakage attack on every plaintext upload (mask only, and with the
   self-audit policy), scored on the TRUE ratings against the no-knowledge guess, and on
   plain FedMF uploads;
3. cost: the adaptive protocol (self-audit, and count with the median number of ratings
   as threshold) vs encrypting every upload,
   with packed Paillier (2048-bit key), on a seeded subset of users for a few rounds (an
   encrypting client costs about a second per round at ML-100K's upload size); the JSON
   records the subset size and rounds.

``--quick`` (< 60 s): a 60-user synthetic split, a 1024-bit test key (opt-in), few rounds.

    python bench/fedmmf_adaptive.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from fedmf.data import load_split, random_holdout, synthetic_ratings
from fedmf.masked import MaskedRunConfig, train_masked
from fedmf.model import ModelConfig
from secagg import make_backend

ATTACK_KEYS = ("users_recovered", "exact_fraction", "guess_exact_fraction", "rmse", "guess_rmse",
               "max_user_advantage")


def _run(split, backend, dataset, **options) -> dict:
    run = MaskedRunConfig(dataset=dataset, **options)
    t0 = time.perf_counter()
    summary = train_masked(split, backend, ModelConfig(), run, log=lambda *_: None)
    summary["wall_seconds"] = time.perf_counter() - t0
    return summary


def _attack(summary: dict, key: str = "attack") -> dict:
    return {k: summary[key][k] for k in ATTACK_KEYS}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic 60 users, small key; under 60 s")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rounds", type=int, help="training rounds (default 60; --quick 10)")
    parser.add_argument("--cost-users", type=int, help="users in the cost runs (default 60)")
    parser.add_argument("--cost-rounds", type=int, help="rounds in the cost runs (default 3; --quick 2)")
    args = parser.parse_args(argv)
    if args.quick:
        dataset, mask_model = "synthetic", "bias"
        split = random_holdout(synthetic_ratings(n_users=60, n_items=50, density=0.3, min_per_user=5, seed=3),
                               0.2, seed=3, name="synthetic-60")
        key = {"key_bits": 1024, "allow_insecure_small_key": True}
        rounds, cost_users, cost_rounds = args.rounds or 10, None, args.cost_rounds or 2
    else:
        dataset, mask_model = "ml-100k", "ridge"
        split = load_split("ml-100k", "u1")
        key = {"key_bits": 2048}
        rounds, cost_users, cost_rounds = args.rounds or 60, args.cost_users or 60, args.cost_rounds or 3
    common = dict(mask_model=mask_model, rounds=rounds)
    mask_only = _run(split, make_backend("plain"), dataset, **common)
    audit = _run(split, make_backend("plain"), dataset, policy="audit", compare_plain=False, **common)
    encrypted = make_backend("paillier_packed", **key)
    cost = {}
    median_fitted = int(np.median(np.bincount(split.train.users, minlength=split.train.n_users)))
    for policy in ("audit", "count"):
        s = _run(split, encrypted, dataset, policy=policy, mask_model=mask_model, rounds=cost_rounds,
                 min_fitted=median_fitted,
                 participants=cost_users, compare_plain=False, compare_encrypt_all_rounds=cost_rounds)
        cost[policy] = {
            "participants": s["participants"], "rounds": s["rounds"],
            "encrypted_fraction": s["encrypted_fraction"],
            "min_fitted": median_fitted if policy == "count" else None,
            "seconds_per_round": s["seconds_per_round"],
            "encrypt_all_seconds_per_round": s["encrypt_all"]["seconds_per_round"],
            "ratio_vs_encrypt_all": s["seconds_per_round_vs_encrypt_all"],
            "attack": _attack(s),
        }
    result = {
        "dataset": split.name, "quick": args.quick, "mask_model": mask_model, "rounds": rounds,
        "key_bits": key["key_bits"], "machine": platform.processor() or platform.machine(),
        "accuracy": {
            "plain_fedmf_test_rmse": mask_only["plain_fedmf_test_rmse"],
            "masked_fedmf_test_rmse": mask_only["test_rmse"],
            "rmse_difference": mask_only["rmse_difference"],
        },
        "leakage": {
            "plain_fedmf": _attack(mask_only, "plain_fedmf_attack"),
            "mask_only": _attack(mask_only),
            "self_audit_plaintext_users": _attack(audit),
            "self_audit_encrypted_fraction": audit["encrypted_fraction"],
            "self_audit_margin": audit["audit_margin"],
        },
        "cost": cost,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return result


if __name__ == "__main__":
    main()
