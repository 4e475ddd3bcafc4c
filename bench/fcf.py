"""FCF on MovieLens 100K (leave-one-out, 99 sampled negatives): accuracy, cost, leakage.

Everything is measured in one run, against peers in the same run:

* accuracy: FCF over ``plain`` on all 943 users (wall time of the whole run), our
  centralized ALS from the same initial Y (the no-loss check; and from a second initial
  Y, to show how much the metrics move between two optima of the same objective), and
  the ``implicit`` library's ALS with the same K, alpha (its confidence matrix
  1 + alpha r passed explicitly, its alpha = 1) and lambda: with its defaults (conjugate
  gradient, float32, its own initialisation) and exact (Cholesky, float64, our Y0).
  Test metrics at the best-validation round (HR@10) and the training objective J;
* ``secagg+`` (``--secagg-bits``, default 24) on all 943 users and ``paillier_packed``
  (2048-bit key) on a ``--paillier-users`` cohort (default 100: one worker needs minutes
  per round per hundred users): per-round test metrics against a plain run on the same
  users (same seed and Y0), and per-round cost (client seconds per client, server
  seconds, bytes up per client). The packed-Paillier rounds run in a second process
  beside the rest (two cores);
* python-paillier (``phe``) value by value on a sample of one real upload's values,
  extrapolated to the whole upload (phe works value by value), against packed Paillier;
* the rank-one attack (:mod:`attacks.fcf_leakage`) on the uploads of round 1 of each
  run, plus ``secagg`` (complete graph) on 50 users.

    python bench/fcf.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import phe

from attacks.fcf_leakage import FCFRecord, evaluate_backend, evaluate_record
from fedmf.als import ImplicitConfig, centralized_als, init_item_factors, objective, solve_rows
from fedmf.data import load_implicit
from fedmf.fcf import REPORTED, FCFTrainer, run_fcf
from fedmf.ranking import evaluate_ranking
from secagg import make_backend

HEADLINE = ("hr_at_10", "ndcg_at_10", "precision_at_10", "map_at_10")


def attack_observer(split, model, out: dict):
    """An engine observer that attacks the uploads of round 1 and keeps the report."""
    Y0 = {}

    def observer(rnd, result, uploads, scale):
        if rnd == 1:
            shape = Y0["Y"].shape
            record = FCFRecord(out["backend"], 1, Y0["Y"], model.alpha, sorted(uploads),
                               {c: v.reshape(shape) * scale for c, v in result.view.per_client.items()})
            out.update(evaluate_record(record, split))

    return observer, Y0


def fcf_run(split, backend_name, options, rounds, seed, users=None):
    """One FCF run with the round-1 attack; returns (summary, attack report, wall seconds, engine)."""
    model = ImplicitConfig()
    backend = make_backend(backend_name, record_view=True, **options)
    attack = {"backend": backend.name}
    observer, Y0 = attack_observer(split, model, attack)
    Y0["Y"] = init_item_factors(model, split.n_items, seed)
    t0 = time.perf_counter()
    summary, engine = run_fcf(split, backend, rounds, model=model, seed=seed, users=users,
                              centralized_iterations=None, observer=observer)
    return summary, attack, time.perf_counter() - t0, engine


def _paillier_job(rounds, seed, key_bits, users):
    split = load_implicit("ml-100k", "loo", seed=seed)
    summary, attack, wall, _ = fcf_run(split, "paillier_packed", {"key_bits": key_bits, "workers": 1}, rounds,
                                       seed, users=None if users is None else np.arange(users))
    return summary, attack, wall


def relative_gap(a: float, b: float) -> float:
    """|a - b| / b (0 when both are 0)."""
    return abs(a - b) / b if b else float(a != b)


def tracking(history, reference) -> dict[str, object]:
    """Per-round relative gaps of the test metrics to the plain run's same rounds."""
    gaps = {k: [relative_gap(h[f"test_{k}"], r[f"test_{k}"]) for h, r in zip(history, reference)]
            for k in HEADLINE}
    return {"rounds_compared": len(history), "max_relative_gap": {k: max(v) for k, v in gaps.items()},
            "within_0_5_percent_every_round": all(max(v) <= 0.005 for v in gaps.values()),
            "per_round": gaps}


def cost(summary) -> dict[str, float]:
    return {k: summary[k] for k in ("seconds_per_round", "client_seconds_per_round", "server_seconds_per_round",
                                    "bytes_up_per_client", "bytes_down_per_client", "setup_seconds", "rounds")}


def als_peer(split, model, Y0, iterations):
    """Our ALS: test metrics at the best-validation iteration, and the objective J there."""
    best = None
    for it, (_, Y) in enumerate(centralized_als(split, model, Y0, iterations), start=1):
        X = solve_rows(Y, split.train_indptr, split.train_indices, np.arange(split.n_users), model)
        scores = lambda users, X=X, Y=Y: X[users] @ Y.T
        val = evaluate_ranking(scores, split, "val")["hr_at_10"]
        if best is None or val >= best[0]:
            best = (val, it, evaluate_ranking(scores, split, "test"), objective(split, X, Y, model))
    return {**{k: best[2][k] for k in REPORTED}, "best_iteration": best[1], "iterations": iterations,
            "objective": best[3]}


def implicit_peer(split, model, iterations, seed, Y0=None):
    """The implicit library's ALS; ``Y0`` given: exact solver, float64, our initial Y."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    conf = csr_matrix((np.full(split.train_indices.size, 1.0 + model.alpha), split.train_indices,
                       split.train_indptr), shape=(split.n_users, split.n_items))
    best, t_total = None, 0.0
    exact = Y0 is not None
    for it in range(1, iterations + 1):
        lib = AlternatingLeastSquares(factors=model.factors, regularization=model.reg, alpha=1.0,
                                      iterations=it, random_state=seed, use_cg=not exact,
                                      dtype=np.float64 if exact else np.float32)
        if exact:
            lib.item_factors = Y0.copy()
            lib.user_factors = np.zeros((split.n_users, model.factors))
        t0 = time.perf_counter()
        lib.fit(conf, show_progress=False)
        t_total = time.perf_counter() - t0
        X, Y = np.asarray(lib.user_factors, float), np.asarray(lib.item_factors, float)
        scores = lambda users, X=X, Y=Y: X[users] @ Y.T
        val = evaluate_ranking(scores, split, "val")["hr_at_10"]
        if best is None or val >= best[0]:
            best = (val, it, evaluate_ranking(scores, split, "test"), objective(split, X, Y, model))
    return {**{k: best[2][k] for k in REPORTED}, "best_iteration": best[1], "iterations": iterations,
            "objective": best[3], "fit_seconds_last": t_total,
            "solver": "cholesky, float64, our Y0" if exact else "library defaults: conjugate gradient, float32, own init"}


def phe_sample(split, values: int, key_bits: int, seed: int) -> dict[str, float]:
    """phe value by value on a sample of one user's real round-1 upload, extrapolated."""
    trainer = FCFTrainer(split, seed=seed)
    upload = trainer.local_updates(1, [0]).vectors[0] / trainer.fcf.upload_clip
    sample = np.random.default_rng(seed).choice(upload, values, replace=False)
    public, private = phe.generate_paillier_keypair(n_length=key_bits)
    t0 = time.perf_counter()
    ciphers = [public.encrypt(float(x), precision=1e-5) for x in sample]
    enc = (time.perf_counter() - t0) / values
    t0 = time.perf_counter()
    summed = [c + c for c in ciphers]
    add = (time.perf_counter() - t0) / values
    t0 = time.perf_counter()
    decoded = np.array([private.decrypt(c) for c in summed])
    dec = (time.perf_counter() - t0) / values
    if not np.allclose(decoded, 2 * sample, atol=1e-5):
        raise AssertionError("phe baseline decrypted a wrong sum")
    length = upload.size
    return {"values_measured": values, "values_per_upload": length, "extrapolated": True,
            "encrypt_seconds_per_value": enc, "decrypt_seconds_per_value": dec, "add_seconds_per_value": add,
            "client_seconds_per_client": length * (enc + dec),
            "server_seconds_for_round": length * add * split.n_users,
            "bytes_up_per_client": length * ((public.n.bit_length() * 2 + 7) // 8 + 4)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds and a 100-user cohort for the crypto runs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rounds", type=int, help="plain FCF rounds (default 150; --quick 10)")
    parser.add_argument("--secagg-rounds", type=int, help="secagg+ rounds (default 5; --quick 2)")
    parser.add_argument("--secagg-bits", type=int, default=24, help="secagg+ quantisation bits")
    parser.add_argument("--paillier-rounds", type=int, help="paillier_packed rounds (default 5; --quick 1)")
    parser.add_argument("--paillier-users", type=int, default=100,
                        help="cohort of the paillier_packed run (0: all users)")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 150)
    s_rounds = args.secagg_rounds or (2 if args.quick else 5)
    p_rounds = args.paillier_rounds or (1 if args.quick else 5)
    cohort = 100 if args.quick else None
    p_cohort = args.paillier_users or None
    seed = args.seed
    t_start = time.perf_counter()
    split = load_implicit("ml-100k", "loo", seed=seed)
    model = ImplicitConfig()
    out = {"dataset": "ml-100k", "split": split.name, "users": split.n_users, "items": split.n_items,
           "quick": args.quick, "seed": seed, "key_bits": args.key_bits,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "host_load_note": "measured while other jobs shared the 2 cores (load average recorded)",
           "load_average_at_start": os.getloadavg()[0]}
    with ProcessPoolExecutor(max_workers=1) as pool:
        paillier_future = pool.submit(_paillier_job, p_rounds, seed, args.key_bits, p_cohort)

        print(f"plain FCF, {rounds} rounds on {split.n_users} users ...", flush=True)
        plain, plain_attack, plain_wall, engine = fcf_run(split, "plain", {}, rounds, seed)
        Y0 = init_item_factors(model, split.n_items, seed)
        final = engine.trainer
        out["fcf"] = {**{k: plain[k] for k in REPORTED}, "best_round": plain["best_round"],
                      "last_round": plain["last_round"], "config": plain["config"], "wall_seconds": plain_wall,
                      **cost(plain)}
        print(json.dumps({k: out["fcf"][k] for k in HEADLINE + ("wall_seconds",)}), flush=True)

        print("centralized peers ...", flush=True)
        out["als"] = als_peer(split, model, Y0, 20)
        out["als_other_init"] = als_peer(split, model, init_item_factors(model, split.n_items, seed + 1), 20)
        out["implicit_als"] = implicit_peer(split, model, 20, seed)
        out["implicit_als_exact"] = implicit_peer(split, model, 20, seed, Y0=Y0)
        out["fcf"]["objective_final"] = objective(
            split, final.solve_users(np.arange(split.n_users)), final.Y, model)
        for peer in ("als", "implicit_als", "als_other_init"):
            out[f"fcf_vs_{peer}_relative_gap"] = {k: relative_gap(out["fcf"][k], out[peer][k]) for k in HEADLINE}
        out["als_init_spread_relative"] = {k: relative_gap(out["als_other_init"][k], out["als"][k]) for k in HEADLINE}
        print(json.dumps({k: v for k, v in out.items() if "gap" in k or "spread" in k}), flush=True)

        cohort_users = None if cohort is None else np.arange(cohort)
        reference = plain
        if cohort is not None:
            reference, *_ = fcf_run(split, "plain", {}, s_rounds, seed, users=cohort_users)
        p_reference, *_ = fcf_run(split, "plain", {}, p_rounds, seed,
                                  users=None if p_cohort is None else np.arange(p_cohort))
        print(f"secagg+ ({args.secagg_bits} bits), {s_rounds} rounds ...", flush=True)
        sa, sa_attack, sa_wall, _ = fcf_run(split, "secagg+", {"bits": args.secagg_bits}, s_rounds, seed,
                                            users=cohort_users)
        out["secagg+"] = {"rounds": s_rounds, "users": sa["users"], "bits": args.secagg_bits, "wall_seconds": sa_wall,
                          **cost(sa), "vs_plain": tracking(sa["history"], reference["history"])}
        print(json.dumps({k: v for k, v in out["secagg+"].items() if k != "vs_plain"}), flush=True)

        print("secagg (complete graph) on 50 users, attack only ...", flush=True)
        secagg_attack = evaluate_backend(split, "secagg", round=1, seed=seed, users=np.arange(50), model=model)
        phe_row = phe_sample(split, 20 if args.quick else 200, args.key_bits, seed)

        print("waiting for paillier_packed ...", flush=True)
        pp, pp_attack, pp_wall = paillier_future.result()
    out["paillier_packed"] = {"rounds": p_rounds, "users": pp["users"], "wall_seconds": pp_wall, **cost(pp),
                              "vs_plain_same_cohort": tracking(pp["history"], p_reference["history"])}
    out["cost_per_round"] = {
        name: {k: out_row[k] for k in ("client_seconds_per_round", "server_seconds_per_round", "bytes_up_per_client")}
        for name, out_row in (("plain", out["fcf"]), ("secagg+", out["secagg+"]), ("paillier_packed", out["paillier_packed"]))
    }
    out["phe"] = phe_row
    out["packed_vs_phe_client_speedup"] = phe_row["client_seconds_per_client"] / pp["client_seconds_per_round"]
    out["packed_vs_phe_server_speedup"] = phe_row["server_seconds_for_round"] * pp["users"] / split.n_users / pp["server_seconds_per_round"]
    out["packed_vs_phe_bytes_ratio"] = pp["bytes_up_per_client"] / phe_row["bytes_up_per_client"]
    out["attack"] = {"plain": plain_attack, "secagg+": sa_attack, "paillier_packed": pp_attack,
                     "secagg": secagg_attack}
    out["wall_seconds_total"] = time.perf_counter() - t_start
    out["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps({k: v for k, v in out.items() if k not in ("fcf", "secagg+", "paillier_packed")}, indent=1)[:4000])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
