"""FCF on MovieLens 100K (leave-one-out, 99 sampled negatives): accuracy, cost, leakage.

Everything is measured in one run, against peers in the same run:

* accuracy: FCF over ``plain`` on all 943 users for ``--rounds`` (default 600, to its
  stationary point), our centralized ALS from the same initial Y for
  ``--als-iterations`` (default 300, to its stationary point), and the ``implicit``
  library's ALS with the same K, alpha (its confidence matrix 1 + alpha r passed
  explicitly, its alpha = 1) and lambda, as many iterations: with its defaults
  (conjugate gradient, float32, its own initialisation) and exact (Cholesky, float64,
  our Y0). The no-loss check ``fcf_vs_*_relative_gap`` compares them at convergence
  (FCF's last round, each ALS's last iteration); ``fcf_vs_als_relative_gap_at_best_validation``
  compares test metrics at each one's best-validation round (HR@10), two different paths
  to the same point. The training objective J and |grad_Y J| are reported beside them;
* seeds: ``--seeds`` initial points in all (seed 0 is the run above): for each further
  one, FCF (plain, 943 users, no per-round evaluation: its wall and CPU seconds are the
  "whole run" timing) and ALS from the same Y, both to convergence; the per-seed gaps
  and their mean and standard deviation;
* ``secagg+`` (``--secagg-bits``, default 24) on all 943 users and ``paillier_packed``
  (2048-bit key, ``--paillier-bits`` default 24) on a ``--paillier-users`` cohort (default 100: one worker needs minutes
  per round per hundred users): per-round test metrics against a plain run on the same
  users (same seed and Y0), and per-round cost (client seconds per client, server
  seconds, bytes up per client). The packed-Paillier rounds run in a second process
  beside the rest (two cores);
* python-paillier (``phe``) value by value on a sample of one real upload's values,
  extrapolated to the whole upload (phe works value by value), against packed Paillier;
* the rank-one attack (:mod:`attacks.fcf_leakage`) on the uploads of round 1 of each
  run, plus ``secagg`` (complete graph) on 50 users.

``--skip-paillier`` leaves out the ``paillier_packed`` run, its attack and the phe
comparison (recorded under ``skipped``).

    python bench/fcf.py [--quick] [--json PATH] [--seeds N] [--skip-paillier]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import phe

from attacks.fcf_leakage import FCFRecord, evaluate_backend, evaluate_record
from fedmf.als import ImplicitConfig, centralized_als, init_item_factors, objective, solve_rows
from fedmf.data import load_implicit
from fedmf.engine import Engine
from fedmf.fcf import REPORTED, FCFTrainer, device_shares, run_fcf
from fedmf.ranking import evaluate_ranking
from fedmf.warmup import warm_numba_kernels
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


def _paillier_job(rounds, seed, key_bits, bits, users, workers=1, djn_bits=None):
    split = load_implicit("ml-100k", "loo", seed=seed)
    options = {"key_bits": key_bits, "workers": workers, "precision_bits": bits,
               **({} if djn_bits is None else {"obfuscation": "djn", "djn_exponent_bits": djn_bits})}
    summary, attack, wall, _ = fcf_run(split, "paillier_packed", options, rounds, seed,
                                       users=None if users is None else np.arange(users))
    return summary, attack, wall


class _TrainingOnly(FCFTrainer):
    """FCF without the per-round evaluation (for the wall time of training alone)."""

    def evaluate(self, round):
        return {}


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def training_only_run(split, model, rounds, seed) -> dict[str, object]:
    """``rounds`` plain FCF rounds on every user from seed's Y0, no per-round evaluation;
    wall and CPU seconds, then the converged model's test metrics, J and |grad_Y J|."""
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = _TrainingOnly(split, model, seed=seed)
    Engine(trainer, "plain", seed=seed).run(rounds)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    X = trainer.solve_users(np.arange(split.n_users))
    test = evaluate_ranking(lambda users: X[users] @ trainer.Y.T, split, "test")
    return {**{k: test[k] for k in REPORTED}, "rounds": rounds, "wall_seconds": wall, "cpu_seconds": cpu,
            "objective": objective(split, X, trainer.Y, model), "grad_norm_last": trainer.grad_norm}


def _metrics_and_objective(split, model, X, Y, parts=("val", "test")):
    scores = lambda users: X[users] @ Y.T
    return {part: evaluate_ranking(scores, split, part) for part in parts}, objective(split, X, Y, model)


def grad_norm(split, model, Y) -> float:
    """|grad_Y J| at Y with every x_u solved (the gradient FCF's server step uses)."""
    users = np.arange(split.n_users)
    X = solve_rows(Y, split.train_indptr, split.train_indices, users, model)
    W = device_shares(Y, X, split.train_indptr, split.train_indices, users, model.alpha)
    return float(np.linalg.norm(-2.0 * W.T @ X + 2.0 * model.reg * Y))


def als_peer(split, model, Y0, iterations, *, track=True):
    """Our ALS: test metrics at its last iteration (convergence) and, with ``track``, at its
    best-validation iteration; the objective J and |grad_Y J| at both."""
    best = None
    for it, (_, Y) in enumerate(centralized_als(split, model, Y0, iterations), start=1):
        if not track and it < iterations:
            continue
        X = solve_rows(Y, split.train_indptr, split.train_indices, np.arange(split.n_users), model)
        parts, J = _metrics_and_objective(split, model, X, Y)
        val = parts["val"]["hr_at_10"]
        if best is None or val >= best[0]:
            best = (val, it, parts["test"], J)
    last = {k: parts["test"][k] for k in REPORTED}
    out = {**last, "iterations": iterations, "objective": J, "grad_norm_last": grad_norm(split, model, Y)}
    if track:
        out["best_validation"] = {**{k: best[2][k] for k in REPORTED}, "iteration": best[1], "objective": best[3]}
    return out


def implicit_peer(split, model, iterations, seed, Y0=None):
    """The implicit library's ALS run ``iterations`` (its convergence); ``Y0`` given: exact
    solver, float64, our initial Y. Test metrics and J of the fitted factors."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    conf = csr_matrix((np.full(split.train_indices.size, 1.0 + model.alpha), split.train_indices,
                       split.train_indptr), shape=(split.n_users, split.n_items))
    exact = Y0 is not None
    lib = AlternatingLeastSquares(factors=model.factors, regularization=model.reg, alpha=1.0,
                                  iterations=iterations, random_state=seed, use_cg=not exact,
                                  dtype=np.float64 if exact else np.float32)
    if exact:
        lib.item_factors = Y0.copy()
        lib.user_factors = np.zeros((split.n_users, model.factors))
    t0 = time.perf_counter()
    lib.fit(conf, show_progress=False)
    fit_seconds = time.perf_counter() - t0
    X, Y = np.asarray(lib.user_factors, float), np.asarray(lib.item_factors, float)
    parts, J = _metrics_and_objective(split, model, X, Y, parts=("test",))
    return {**{k: parts["test"][k] for k in REPORTED}, "iterations": iterations, "objective": J,
            "fit_seconds": fit_seconds,
            "solver": "cholesky, float64, our Y0" if exact else "library defaults: conjugate gradient, float32, own init"}


def seed_study(split, model, rounds, iterations, seeds, main_gap) -> dict[str, object]:
    """FCF and ALS from further initial points, both to convergence; gaps per seed, mean, std."""
    runs = [{"seed": 0, "fcf_vs_als_relative_gap": main_gap}]
    for seed in range(1, seeds):
        print(f"seed {seed}: FCF {rounds} rounds (no per-round evaluation) and ALS {iterations} iterations ...",
              flush=True)
        fcf = training_only_run(split, model, rounds, seed)
        als = als_peer(split, model, init_item_factors(model, split.n_items, seed), iterations, track=False)
        runs.append({"seed": seed, "fcf": fcf, "als": als,
                     "fcf_vs_als_relative_gap": {k: relative_gap(fcf[k], als[k]) for k in HEADLINE}})
        print(json.dumps(runs[-1]["fcf_vs_als_relative_gap"]), flush=True)
    gaps = {k: [r["fcf_vs_als_relative_gap"][k] for r in runs] for k in HEADLINE}
    return {"seeds": seeds, "runs": runs,
            "gap_mean": {k: float(np.mean(v)) for k, v in gaps.items()},
            "gap_std": {k: float(np.std(v)) for k, v in gaps.items()},
            "gap_max": {k: float(np.max(v)) for k, v in gaps.items()}}


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


def accuracy(out, split, model, rounds, iterations, seeds, seed) -> tuple:
    """The plain FCF run, the centralized peers, the gaps and the seed study (into ``out``)."""
    print(f"plain FCF, {rounds} rounds on {split.n_users} users ...", flush=True)
    plain, plain_attack, plain_wall, engine = fcf_run(split, "plain", {}, rounds, seed)
    Y0 = init_item_factors(model, split.n_items, seed)
    final = engine.trainer
    out["fcf"] = {**{k: plain[k] for k in REPORTED}, "best_round": plain["best_round"],
                  "last_round": plain["last_round"], "config": plain["config"], "wall_seconds": plain_wall,
                  "grad_norm_last": plain["grad_norm_last"], **cost(plain)}
    out["fcf"]["objective_final"] = objective(split, final.solve_users(np.arange(split.n_users)), final.Y, model)
    print(json.dumps({k: out["fcf"]["last_round"][k] for k in HEADLINE}), flush=True)

    print(f"centralized peers, {iterations} iterations ...", flush=True)
    out["als"] = als_peer(split, model, Y0, iterations)
    out["als_other_init"] = als_peer(split, model, init_item_factors(model, split.n_items, seed + 1), iterations,
                                     track=False)
    out["implicit_als"] = implicit_peer(split, model, iterations, seed)
    out["implicit_als_exact"] = implicit_peer(split, model, iterations, seed, Y0=Y0)
    last = out["fcf"]["last_round"]
    for peer in ("als", "implicit_als", "implicit_als_exact", "als_other_init"):
        out[f"fcf_vs_{peer}_relative_gap"] = {k: relative_gap(last[k], out[peer][k]) for k in HEADLINE}
    out["fcf_vs_als_relative_gap_at_best_validation"] = {
        k: relative_gap(out["fcf"][k], out["als"]["best_validation"][k]) for k in HEADLINE}
    out["als_init_spread_relative"] = {k: relative_gap(out["als_other_init"][k], out["als"][k]) for k in HEADLINE}
    out["objective_relative_gap_fcf_vs_als"] = relative_gap(out["fcf"]["objective_final"], out["als"]["objective"])
    print(json.dumps({k: v for k, v in out.items() if "gap" in k or "spread" in k}), flush=True)
    out["seed_study"] = seed_study(split, model, rounds, iterations, seeds, out["fcf_vs_als_relative_gap"])
    runs = out["seed_study"]["runs"][1:]
    if runs:
        out["fcf"]["training_only_wall_seconds"] = float(np.mean([r["fcf"]["wall_seconds"] for r in runs]))
        out["fcf"]["training_only_cpu_seconds"] = float(np.mean([r["fcf"]["cpu_seconds"] for r in runs]))
    return plain, plain_attack


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds and a 100-user cohort for the crypto runs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rounds", type=int, help="plain FCF rounds (default 600; --quick 10)")
    parser.add_argument("--als-iterations", type=int, help="centralized ALS iterations (default 300; --quick 10)")
    parser.add_argument("--seeds", type=int, help="initial points for FCF and ALS, seed 0 included (default 3; --quick 1)")
    parser.add_argument("--secagg-rounds", type=int, help="secagg+ rounds (default 5; --quick 2)")
    parser.add_argument("--secagg-bits", type=int, default=24, help="secagg+ quantisation bits")
    parser.add_argument("--paillier-rounds", type=int, help="paillier_packed rounds (default 5; --quick 1)")
    parser.add_argument("--paillier-bits", type=int, default=24, help="packed Paillier quantisation bits")
    parser.add_argument("--paillier-users", type=int, default=100,
                        help="cohort of the paillier_packed run (0: all users)")
    parser.add_argument("--skip-paillier", action="store_true",
                        help="leave out the paillier_packed run, its attack and the phe comparison")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the wall time of --rounds plain rounds on all users without per-round "
                             "evaluation (and the converged model's metrics)")
    parser.add_argument("--only-paillier", action="store_true",
                        help="run only the paillier_packed part (its plain peer, attack and the phe "
                             "comparison) in this process with --workers")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="--only-paillier: processes for the clients' encryption (default: all cores)")
    parser.add_argument("--djn-exponent-bits", type=int, metavar="BITS",
                        help="paillier_packed with DJN short-exponent obfuscation (extra assumption)")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 600)
    iterations = args.als_iterations or (10 if args.quick else 300)
    seeds = args.seeds or (1 if args.quick else 3)
    s_rounds = args.secagg_rounds or (2 if args.quick else 5)
    p_rounds = args.paillier_rounds or (1 if args.quick else 5)
    cohort = 100 if args.quick else None
    p_cohort = args.paillier_users or None
    seed = args.seed
    t_start, c_start = time.perf_counter(), cpu_seconds()
    split = load_implicit("ml-100k", "loo", seed=seed)
    model = ImplicitConfig()
    out = {"dataset": "ml-100k", "split": split.name, "users": split.n_users, "items": split.n_items,
           "quick": args.quick, "seed": seed, "key_bits": args.key_bits,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "host_load_note": "measured while other jobs shared the 2 cores (load average recorded)",
           "load_average_at_start": os.getloadavg()[0],
           "skipped": ["paillier_packed", "phe"] if args.skip_paillier else []}
    if args.timing_only:
        warm_numba_kernels()
        load = os.getloadavg()
        timing = training_only_run(split, model, rounds, seed)
        timing.update(load_average_before=load, load_average_after=os.getloadavg(), nice=os.nice(0))
        print(json.dumps(timing, indent=1))
        if args.json:
            args.json.write_text(json.dumps(timing, indent=1))
        return timing
    if args.only_paillier:
        return paillier_only(out, split, p_rounds, p_cohort, seed, args, t_start, c_start)
    with ProcessPoolExecutor(max_workers=1) as pool:
        paillier_future = None if args.skip_paillier else pool.submit(
            _paillier_job, p_rounds, seed, args.key_bits, args.paillier_bits, p_cohort)
        plain, plain_attack = accuracy(out, split, model, rounds, iterations, seeds, seed)

        cohort_users = None if cohort is None else np.arange(cohort)
        reference = plain
        if cohort is not None:
            reference, *_ = fcf_run(split, "plain", {}, s_rounds, seed, users=cohort_users)
        print(f"secagg+ ({args.secagg_bits} bits), {s_rounds} rounds ...", flush=True)
        sa, sa_attack, sa_wall, _ = fcf_run(split, "secagg+", {"precision_bits": args.secagg_bits}, s_rounds, seed,
                                            users=cohort_users)
        out["secagg+"] = {"rounds": s_rounds, "users": sa["users"], "bits": args.secagg_bits, "wall_seconds": sa_wall,
                          **cost(sa), "vs_plain": tracking(sa["history"], reference["history"])}
        print(json.dumps({k: v for k, v in out["secagg+"].items() if k != "vs_plain"}), flush=True)

        print("secagg (complete graph) on 50 users, attack only ...", flush=True)
        secagg_attack = evaluate_backend(split, "secagg", round=1, seed=seed, users=np.arange(50), model=model)
        out["attack"] = {"plain": plain_attack, "secagg+": sa_attack, "secagg": secagg_attack}
        if paillier_future is not None:
            p_reference, *_ = fcf_run(split, "plain", {}, p_rounds, seed,
                                      users=None if p_cohort is None else np.arange(p_cohort))
            phe_row = phe_sample(split, 20 if args.quick else 200, args.key_bits, seed)
            print("waiting for paillier_packed ...", flush=True)
            pp, pp_attack, pp_wall = paillier_future.result()
            paillier_parts(out, split, pp, pp_attack, pp_wall, p_reference, phe_row, args)
    out["cost_per_round"] = {
        name: {k: out[name if name != "plain" else "fcf"][k]
               for k in ("client_seconds_per_round", "server_seconds_per_round", "bytes_up_per_client")}
        for name in ("plain", "secagg+", "paillier_packed") if (out.get(name) or name == "plain")}
    out["wall_seconds_total"] = time.perf_counter() - t_start
    out["cpu_seconds_total"] = cpu_seconds() - c_start
    out["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps({k: v for k, v in out.items() if k not in ("fcf", "secagg+", "paillier_packed", "seed_study")},
                     indent=1)[:4000])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


def paillier_only(out, split, rounds, cohort, seed, args, t_start, c_start) -> dict:
    """``--only-paillier``: the paillier_packed run with ``--workers`` processes, its plain
    peer on the same cohort, its attack and the phe comparison; written to ``--json``."""
    users = None if cohort is None else np.arange(cohort)
    reference, plain_attack, *_ = fcf_run(split, "plain", {}, rounds, seed, users=users)
    phe_row = phe_sample(split, 20 if args.quick else 200, args.key_bits, seed)
    print(f"paillier_packed, {rounds} rounds, workers={args.workers} ...", flush=True)
    pp, pp_attack, pp_wall = _paillier_job(rounds, seed, args.key_bits, args.paillier_bits, cohort,
                                           args.workers, args.djn_exponent_bits)
    out["attack"] = {"plain": plain_attack}
    out["obfuscation"] = ("crt" if args.djn_exponent_bits is None
                          else f"djn, {args.djn_exponent_bits}-bit exponent")
    out["workers"] = args.workers
    paillier_parts(out, split, pp, pp_attack, pp_wall, reference, phe_row, args)
    out["wall_seconds_total"] = time.perf_counter() - t_start
    out["cpu_seconds_total"] = cpu_seconds() - c_start
    out["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps({k: v for k, v in out.items() if k != "paillier_packed"}, indent=1)[:3000])
    print(json.dumps({k: v for k, v in out["paillier_packed"].items() if k != "vs_plain_same_cohort"}))
    print("within 0.5 % of plain every round:", out["paillier_packed"]["vs_plain_same_cohort"]
          ["within_0_5_percent_every_round"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


def paillier_parts(out, split, pp, pp_attack, pp_wall, p_reference, phe_row, args) -> None:
    """The paillier_packed run, its attack and the phe comparison (into ``out``)."""
    out["paillier_packed"] = {"rounds": pp["rounds"], "users": pp["users"], "bits": args.paillier_bits,
                              "wall_seconds": pp_wall, **cost(pp),
                              "vs_plain_same_cohort": tracking(pp["history"], p_reference["history"])}
    out["phe"] = phe_row
    out["packed_vs_phe_client_speedup"] = phe_row["client_seconds_per_client"] / pp["client_seconds_per_round"]
    out["packed_vs_phe_server_speedup"] = (phe_row["server_seconds_for_round"] * pp["users"] / split.n_users
                                           / pp["server_seconds_per_round"])
    out["packed_vs_phe_bytes_ratio"] = pp["bytes_up_per_client"] / phe_row["bytes_up_per_client"]
    out["attack"]["paillier_packed"] = pp_attack


if __name__ == "__main__":
    main()
