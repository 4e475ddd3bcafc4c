"""PFedRec on MovieLens 100K: accuracy over seeds, baselines, backends, LDP, leakage, wall time.

Protocol (fcf_pfedrec_personalfr.md §2.3, the official code): leave-one-out by time
(ties in time by file order, as the code's pandas rank), 99 sampled negatives for
validation and test, HR@10 / NDCG@10 with pessimistic ties, test numbers at the round
of best validation HR@10. The split's negatives use seed 0 in every run (the code
seeds ``random`` with 0); the model seed (init, negatives, shuffling) varies.

Sections (each against its peer in the same run):
* ``plain``: PFedRec, ``--seeds`` seeds x ``--rounds`` rounds, mean +- std; the
  global-table inference of the same runs (PFedRec without item personalization);
* ``fedmf``: FedMF on implicit data, same seeds and rounds;
* ``secagg``: PFedRec over ``secagg+`` for ``--secagg-rounds`` rounds on all users,
  against plain seed 0 over the same rounds (per-round HR@10 difference; cost);
* ``paillier``: ``paillier_packed``, ``--paillier-rounds`` rounds (cost per round on all
  users; accuracy against plain over the same rounds);
* ``ldp``: Laplace noise lambda in ``--ldp`` on every uploaded entry (seed 0);
* ``attack``: item-set inference from every user's round-1 upload, in the ``secagg`` and
  ``paillier`` runs and their plain peers (the attack needs one of those sections).

Every run records wall and CPU seconds (this process and its children) and its rounds:
``--budget SECONDS`` stops a plain or secagg+ run after the round that passes that wall
time (the plain peer of a secure run then runs as many rounds). The JSON's ``host`` has
the load average at the start and after the last finished run.

    python bench/pfedrec.py [--quick] [--json PATH] [--sections plain,fedmf,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from attacks.pfedrec_leakage import attack_round
from fedmf.data.implicit import load_implicit
from fedmf.pfedrec import PFedRecConfig, make_engine, run_summary

SECTIONS = ("plain", "fedmf", "secagg", "paillier", "ldp", "attack")
PAPER = {"pfedrec": {"hr_at_10": 0.7162, "ndcg_at_10": 0.4344, "hr_at_10_std": 0.0083, "ndcg_at_10_std": 0.0089},
         "fedmf": {"hr_at_10": 0.6515, "ndcg_at_10": 0.3938},
         "ldp_hr_at_10": {"0.0": 0.7162, "0.1": 0.7145, "0.3": 0.7113, "0.5": 0.7088}}
BACKEND_OPTIONS = {"secagg+": {"precision_bits": 24}, "paillier_packed": {}}


def cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (user + system, all threads)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(split, backend, config, rounds, options=None, show=False, attack=False, budget=None) -> dict:
    """One run; its summary with a compact per-round history, wall and CPU seconds.

    ``attack``: the server keeps round 1's per-client view and the item-set attack runs on
    it (``out["attack"]``); views are not kept after round 1. ``budget``: stop after the
    first round that ends more than ``budget`` wall seconds after the start (at least one
    round; ``out["rounds"]`` says how many ran).
    """
    t0, c0 = time.perf_counter(), cpu_seconds()
    found = {}

    def observer(rnd, result, uploads, scale):
        found["backend_setup_seconds"] = found.get("backend_setup_seconds", 0.0) + result.cost.setup_seconds
        if attack and rnd == 1:
            found["attack"] = attack_round(result.view.per_client, scale, split, engine.trainer.clients(),
                                           config.latent_dim, engine.backend.name).as_dict()
            engine.backend.record_view = False

    options = {**(options or {}), **({"record_view": True} if attack else {})}
    engine = make_engine(split, backend, config=config, backend_options=options, observer=observer)
    for _ in range(rounds):
        record = engine.run_round()
        if show:
            print(record.line(("val_hr_at_10", "hr_at_10", "ndcg_at_10", "global_hr_at_10")), flush=True)
        if budget is not None and time.perf_counter() - t0 > budget:
            break
    out = run_summary(engine)
    out["wall_seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = cpu_seconds() - c0
    out.update(found)
    keys = ("val_hr_at_10", "hr_at_10", "ndcg_at_10", "global_hr_at_10", "clipped_fraction")
    out["history"] = {k: [r.metrics[k] for r in engine.history] for k in keys}
    return out


def over_seeds(runs: list[dict], key: str = "") -> dict:
    """Mean and std over seeds of HR@10 / NDCG@10 (``key`` selects a nested record)."""
    pick = lambda r: r[key] if key else r
    return aggregate_seeds([{"seed": r["config"]["seed"], "hr_at_10": pick(r)["hr_at_10"],
                             "ndcg_at_10": pick(r)["ndcg_at_10"], "best_round": pick(r)["best_round"],
                             "rounds": r["rounds"], "wall_seconds": r["wall_seconds"],
                             "cpu_seconds": r["cpu_seconds"]}
                            for r in runs])


def aggregate_seeds(per_seed: list[dict]) -> dict:
    """Mean and (population) std of HR@10 and NDCG@10 over per-seed records."""
    per_seed = sorted(per_seed, key=lambda r: r["seed"])
    hr = [r["hr_at_10"] for r in per_seed]
    ndcg = [r["ndcg_at_10"] for r in per_seed]
    return {"hr_at_10": float(np.mean(hr)), "ndcg_at_10": float(np.mean(ndcg)),
            "hr_at_10_std": float(np.std(hr)), "ndcg_at_10_std": float(np.std(ndcg)),
            "seeds": [r["seed"] for r in per_seed], "per_seed": per_seed}


def cost(summary: dict) -> dict:
    return {k: summary[k] for k in ("seconds_per_round", "client_seconds_per_round",
                                    "server_seconds_per_round", "bytes_up_per_client",
                                    "bytes_down_per_client", "backend_setup_seconds", "wall_seconds",
                                    "cpu_seconds", "rounds")}


def against_plain(secure: dict, plain: dict) -> dict:
    """The secure run against plain seed 0 over the same rounds (best-validation test metrics)."""
    n = len(secure["history"]["hr_at_10"])
    ph, sh = plain["history"], secure["history"]
    best = lambda h: max(range(n), key=lambda i: (h["val_hr_at_10"][i], i))
    bp, bs = best(ph), best(sh)
    return {"rounds": n, "hr_at_10": sh["hr_at_10"][bs], "ndcg_at_10": sh["ndcg_at_10"][bs],
            "plain_hr_at_10": ph["hr_at_10"][bp], "plain_ndcg_at_10": ph["ndcg_at_10"][bp],
            "hr_at_10_minus_plain": sh["hr_at_10"][bs] - ph["hr_at_10"][bp],
            "max_abs_round_hr_difference": float(np.max(np.abs(
                np.subtract(sh["hr_at_10"], ph["hr_at_10"][:n])))),
            **cost(secure)}


def combine(parts: list[Path], path: Path | None) -> dict:
    """Merge section JSONs: top-level keys from the first part that has them, nested dicts joined."""
    out: dict = {}
    for part in parts:
        data = json.loads(part.read_text())
        if "per_seed" in data and "per_seed" in out:
            data.update(aggregate_seeds(out["per_seed"] + data["per_seed"]))
            data["seconds_per_round"] = float(np.mean([out["seconds_per_round"], data["seconds_per_round"]]))
            out.update({k: data[k] for k in ("hr_at_10", "ndcg_at_10", "hr_at_10_std",
                                              "ndcg_at_10_std", "seeds", "per_seed", "seconds_per_round")})
        for name, base in data.get("baselines", {}).items():
            known = out.setdefault("baselines", {}).get(name)
            out["baselines"][name] = aggregate_seeds(known["per_seed"] + base["per_seed"]) if known else base
        for key, value in data.items():
            if key == "baselines":
                continue
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key].update(value)
            else:
                out.setdefault(key, value)
    if "ldp" in out and "0.0" not in out["ldp"]:
        seed0 = [r for r in out.get("per_seed", []) if r["seed"] == 0]
        if seed0:
            out["ldp"]["0.0"] = {k: seed0[0][k] for k in ("hr_at_10", "ndcg_at_10")}
    out["combined_from"] = [str(p) for p in parts]
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 20 rounds, short secure runs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {SECTIONS}")
    parser.add_argument("--seeds", type=int, help="model seeds 0..N-1 (default 5; --quick 1)")
    parser.add_argument("--seed-list", help="explicit model seeds, e.g. 2,3 (for parallel parts)")
    parser.add_argument("--rounds", type=int, help="rounds (default 100; --quick 20)")
    parser.add_argument("--secagg-rounds", type=int, help="secagg+ rounds (default --rounds; --quick 2)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="stop each plain or secagg+ run after the round that passes this wall time")
    parser.add_argument("--paillier-rounds", type=int, help="paillier_packed rounds (default 5; --quick 1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for the paillier_packed clients' encryption (default: all cores)")
    parser.add_argument("--djn-exponent-bits", type=int, metavar="BITS",
                        help="paillier_packed with DJN short-exponent obfuscation (extra assumption) "
                             "instead of exact CRT")
    parser.add_argument("--ldp", default="0.1,0.3,0.5", help="Laplace scales besides 0")
    parser.add_argument("--upload-clip", type=float, default=64.0)
    parser.add_argument("--verbose", action="store_true", help="one line per round")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="PART",
                        help="merge the JSON of runs of separate sections (run in parallel) into --json")
    args = parser.parse_args(argv)
    if args.combine:
        return combine(args.combine, args.json)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    seeds = ([int(x) for x in args.seed_list.split(",")] if args.seed_list
             else list(range(args.seeds or (1 if args.quick else 5))))
    rounds = args.rounds or (20 if args.quick else 100)
    secagg_rounds = args.secagg_rounds or (2 if args.quick else rounds)
    paillier_rounds = args.paillier_rounds or (1 if args.quick else 5)
    BACKEND_OPTIONS["paillier_packed"] = {"workers": args.workers, **(
        {} if args.djn_exponent_bits is None
        else {"obfuscation": "djn", "djn_exponent_bits": args.djn_exponent_bits})}
    split = load_implicit("ml-100k", "loo", seed=0, ties="file")
    config = lambda **kw: PFedRecConfig(rounds=rounds, upload_clip=args.upload_clip, **kw)
    out: dict = {"dataset": "ml-100k", "split": "loo (ties by file order), 99 negatives, split seed 0",
                 "rounds": rounds, "seeds": seeds, "backend": "plain", "paper": PAPER,
                 "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "note": "shared 2-core host, loaded by other jobs while measured",
                          "load_average_start": os.getloadavg()}}

    def say(key, value):
        print(json.dumps({key: value}), flush=True)
        out["host"]["load_average_end"] = os.getloadavg()
        if args.json:  # after every finished run, so a partial run leaves its numbers
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2))

    plain_runs = []
    if "plain" in sections:
        for seed in seeds:
            plain_runs.append(run(split, "plain", config(seed=seed), rounds, show=args.verbose,
                                  budget=args.budget))
            out.update(over_seeds(plain_runs))
            out["seconds_per_round"] = float(np.mean([r["seconds_per_round"] for r in plain_runs]))
            out["clipped_fraction_max"] = float(max(max(r["history"]["clipped_fraction"]) for r in plain_runs))
            out.setdefault("baselines", {})["pfedrec_global_table"] = over_seeds(plain_runs, "global_table")
            out.setdefault("history", {})[str(seed)] = plain_runs[-1]["history"]
            say(f"plain seed {seed}", out["per_seed"][-1])
    if "fedmf" in sections:
        runs = []
        for seed in seeds:
            runs.append(run(split, "plain", config(seed=seed, variant="fedmf"), rounds))
            out.setdefault("baselines", {})["fedmf_implicit"] = over_seeds(runs)
            say(f"fedmf seed {seed}", out["baselines"]["fedmf_implicit"]["per_seed"][-1])
    for section, name, n, budget in (("secagg", "secagg+", secagg_rounds, args.budget),
                                     ("paillier", "paillier_packed", paillier_rounds, None)):
        if section in sections:
            secure = run(split, name, config(seed=0), n, BACKEND_OPTIONS[name], show=args.verbose,
                         attack="attack" in sections, budget=budget)
            peer = run(split, "plain", config(seed=0), secure["rounds"], attack="attack" in sections)
            out.setdefault("backends", {})[name] = against_plain(secure, peer)
            if "attack" in sections:
                out.setdefault("attack", {}).update({name: secure["attack"], "plain": peer["attack"]})
            say(name, out["backends"][name])
    if "ldp" in sections:
        out["ldp"] = {}
        if plain_runs and plain_runs[0]["config"]["seed"] == 0:
            out["ldp"]["0.0"] = {k: plain_runs[0][k] for k in ("hr_at_10", "ndcg_at_10")}
        for lam in (float(x) for x in args.ldp.split(",") if x):
            r = run(split, "plain", config(seed=0, ldp_scale=lam), rounds)
            out["ldp"][str(lam)] = {"hr_at_10": r["hr_at_10"], "ndcg_at_10": r["ndcg_at_10"],
                                    "best_round": r["best_round"],
                                    "clipped_fraction_max": max(r["history"]["clipped_fraction"])}
            say(f"ldp {lam}", out["ldp"][str(lam)])
    say("done", True)
    return out


if __name__ == "__main__":
    main()
