"""PersonalFR against Joint and FedAvg in one harness, its cost over secagg+, and the attack.

On ML-100K with the PersonalFR code's protocol (a seeded random 90/10 split of all
ratings; RMSE on explicit data, per-user NDCG@10 over the user's test items on implicit
data), for each feedback type:

* Joint: the autoencoder on centralized data (Adam, lr 1e-3, batches of 100 users);
* FedAvg and PersonalFR with one user per client (and PersonalFR with 100 grouped
  clients, batches of 5 users), 10 % of the clients per round, the code's local
  training, over the plain backend;
* the headline metric is the best test value over the evaluated rounds, as the code
  reports it (optimistic: chosen on the test set); the last round is reported beside it.

Then the same PersonalFR run (explicit, one user per client) over ``plain`` and
``secagg+`` for a few rounds with the same seed, metric at every round and the measured
per-round cost; and the leakage attack on each client's first decoder upload over
``plain`` and ``secagg+``. ML-1M is run only if a local copy exists (no download here).

    python bench/personalfr.py [--quick] [--json PATH] [--rounds R] [--joint-epochs E]

Parts can run in separate processes (``--losses implicit --variants personalfr
--skip-grouped --skip-secagg --skip-attack``) and be combined with ``--merge A.json
B.json --json OUT``; ``--progress P.json`` rewrites each one-user run's figures every
``--eval-every`` rounds to ``P_<loss>_<variant>.json`` (``"complete": false`` until its
last round), which ``--merge`` also takes.
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

from attacks.personalfr_leakage import run_attack
from fedmf.autorec import decoder_size
from fedmf.data import load_split, locate
from fedmf.errors import DatasetNotFoundError
from fedmf.personalfr import FedConfig, make_engine, summarize
from fedmf.personalfr_joint import train_joint
from secagg import make_backend

SECAGG_OPTIONS = {"clip": 1.0, "precision_bits": 16}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def metric_key(loss: str) -> str:
    return "test_rmse" if loss == "explicit" else "ndcg_at_10"


def federated(split, loss, variant, rounds, eval_every, clients=None, backend="plain", seed=0,
              keep_model=False, progress: Path | None = None):
    """One federated run; with ``progress``, its figures so far are rewritten there after
    every ``eval_every`` rounds (``"complete": false`` until the last round)."""
    cfg = FedConfig(loss=loss, variant=variant, rounds=rounds, batch_users=1 if clients is None else 5)
    engine = make_engine(split, make_backend(backend, **(SECAGG_OPTIONS if backend != "plain" else {})),
                         config=cfg, clients=clients, seed=seed, eval_every=eval_every)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    while engine.round < rounds:
        engine.run(min(eval_every, rounds - engine.round))
        out = summarize(engine)
        out["wall_seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = cpu_seconds() - cpu0
        out["load_average_at_end"] = os.getloadavg()
        if progress is not None:
            partial = {"loss": loss, "complete": engine.round == rounds, "of_rounds": rounds,
                       **brief(out, metric_key(loss))}
            progress.write_text(json.dumps(partial, indent=2))
    return (out, engine.trainer.global_flat.copy()) if keep_model else out


def brief(run: dict, key: str) -> dict:
    """The figures of a run kept in the JSON (history trimmed to the evaluated rounds)."""
    keep = ("variant", "backend", "clients", "rounds", "best_round", "last_round", "seconds_per_round",
            "client_seconds_per_round", "server_seconds_per_round", "bytes_up_per_client",
            "active_rows_per_client", "sparse_bytes_up_per_client", "max_abs_upload", "wall_seconds",
            "cpu_seconds", "load_average_at_end", "participations_per_client")
    out = {key: run[key], **{k: run[k] for k in keep if k in run}}
    out["history"] = [{"round": r["round"], key: r[key], "train_loss": r["train_loss"]}
                      for r in run["history"] if key in r]
    return out


def relative_gap(value: float, reference: float, loss: str) -> float:
    """How much worse ``value`` is than ``reference``, as a fraction (negative: better)."""
    return (value - reference) / reference if loss == "explicit" else (reference - value) / reference


def compare(split, loss, rounds, joint_epochs, eval_every, grouped, variants=("joint", "personalfr", "fedavg"),
            progress: Path | None = None):
    """The runs named in ``variants`` for one feedback type, then the derived gaps."""
    key = metric_key(loss)
    out = {}
    if "joint" in variants:
        joint = train_joint(split, loss, joint_epochs)
        out["joint"] = {key: joint[key], "best_epoch": joint["best_epoch"], "last_round": joint["last_round"],
                        "epochs": joint_epochs, "seconds_per_epoch": joint["seconds_per_epoch"]}
    for variant in ("personalfr", "fedavg"):
        if variant in variants:
            where = None if progress is None else progress.with_name(f"{progress.stem}_{loss}_{variant}.json")
            out[variant] = brief(federated(split, loss, variant, rounds, eval_every, progress=where), key)
    if grouped:
        out["personalfr_100_clients"] = brief(federated(split, loss, "personalfr", rounds, eval_every, 100), key)
    return derive(out, split.train.n_items, loss)


def derive(out: dict, n_items: int, loss: str) -> dict:
    """Headline figures and gaps from whichever runs ``out`` holds (also after a merge)."""
    key, pfr, fedavg, joint = metric_key(loss), out.get("personalfr"), out.get("fedavg"), out.get("joint")
    dense32 = 4 * decoder_size(n_items)
    if pfr:
        out.update({
            key: pfr[key], "last_round": pfr["last_round"], "backend": pfr["backend"],
            "seconds_per_round": pfr["seconds_per_round"], "bytes_up_per_client": pfr["bytes_up_per_client"],
            "sparse_bytes_up_per_client": pfr["sparse_bytes_up_per_client"],
            "dense_float32_bytes_up_per_client": dense32,
            "sparse_vs_dense_float32": pfr["sparse_bytes_up_per_client"] / dense32,
            "active_rows_per_client": pfr["active_rows_per_client"], "n_items": n_items,
        })
    if fedavg:
        out["fedavg_bytes_up_per_client"] = fedavg["bytes_up_per_client"]
    if pfr and fedavg:
        out["bytes_ratio_personalfr_vs_fedavg"] = pfr["bytes_up_per_client"] / fedavg["bytes_up_per_client"]
    for run, target in ((pfr, out), (out.get("personalfr_100_clients"), out.get("personalfr_100_clients"))):
        for peer_name, peer in (("joint", joint), ("fedavg", fedavg)):
            if run and peer:
                target[f"gap_vs_{peer_name}_best"] = relative_gap(run[key], peer[key], loss)
                target[f"gap_vs_{peer_name}_last"] = relative_gap(run["last_round"][key], peer["last_round"][key], loss)
    if "gap_vs_joint_best" in out:
        out["target_within_2pct_of_joint"] = out["gap_vs_joint_best"] <= 0.02
    if "gap_vs_fedavg_best" in out:
        out["target_better_than_fedavg"] = out["gap_vs_fedavg_best"] < 0
    return out


def secagg_comparison(split, rounds):
    """PersonalFR (explicit) over plain and secagg+ with one seed: metric every round and cost."""
    runs, decoders = {}, {}
    for name in ("plain", "secagg+"):
        runs[name], decoders[name] = federated(split, "explicit", "personalfr", rounds, 1,
                                               backend=name, keep_model=True)
    plain = [r["test_rmse"] for r in runs["plain"]["history"]]
    secure = [r["test_rmse"] for r in runs["secagg+"]["history"]]
    rel = [abs(s - p) / p for p, s in zip(plain, secure)]
    cost = lambda r: {k: r[k] for k in ("seconds_per_round", "client_seconds_per_round",
                                        "server_seconds_per_round", "bytes_up_per_client",
                                        "bytes_down_per_client")}
    return {
        "rounds": rounds, "options": SECAGG_OPTIONS,
        "plain_test_rmse": plain, "secagg+_test_rmse": secure,
        "max_relative_difference": max(rel), "target_within_0.5pct": max(rel) <= 0.005,
        "plain": cost(runs["plain"]), "secagg+": cost(runs["secagg+"]),
        "max_abs_upload": runs["plain"]["max_abs_upload"],
        "max_abs_decoder_difference": float(np.abs(decoders["plain"] - decoders["secagg+"]).max()),
        "max_abs_decoder_entry": float(np.abs(decoders["plain"]).max()),
    }


def attack(split, rounds):
    out = {}
    for name in ("plain", "secagg+"):
        opts = SECAGG_OPTIONS if name != "plain" else {}
        out[name] = run_attack(split, name, config=FedConfig(batch_users=1), rounds=rounds,
                               backend_options=opts).as_dict()
    out["grouped_100_clients_plain"] = run_attack(
        split, "plain", config=FedConfig(batch_users=5), clients=100, rounds=rounds).as_dict()
    return out


def ml1m_status() -> str:
    try:
        return f"found at {locate('ml-1m', download=False)}; not run in this benchmark (time budget)"
    except (DatasetNotFoundError, TypeError) as exc:
        return f"skipped: no local ML-1M copy ({type(exc).__name__}: {exc})"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (minutes)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rounds", type=int, help="federated rounds (the code uses 800)")
    ap.add_argument("--joint-epochs", type=int)
    ap.add_argument("--secagg-rounds", type=int)
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--losses", default="explicit,implicit", help="comma list; empty for none")
    ap.add_argument("--variants", default="joint,personalfr,fedavg",
                    help="comma list of the one-user-per-client runs: joint, personalfr, fedavg")
    ap.add_argument("--progress", type=Path,
                    help="rewrite each one-user run's figures so far to PROGRESS_<loss>_<variant>.json")
    ap.add_argument("--skip-grouped", action="store_true")
    ap.add_argument("--skip-secagg", action="store_true")
    ap.add_argument("--skip-attack", action="store_true")
    ap.add_argument("--merge", type=Path, nargs="+", help="combine the JSONs of partial runs into --json")
    args = ap.parse_args(argv)
    if args.merge:
        merged = {}
        for path in args.merge:
            part = json.loads(path.read_text())
            if "variant" in part and "loss" in part:  # a --progress file: one run, maybe cut short
                part = {part["loss"]: {part["variant"]: part}}
            for loss in ("explicit", "implicit"):
                if loss in part and loss in merged:
                    part[loss] = {**merged[loss], **part[loss]}
            for k in ("wall_seconds", "cpu_seconds"):  # separate processes: the parts' sum
                if k in part and k in merged:
                    part[k] += merged[k]
            merged.update(part)
        for loss in ("explicit", "implicit"):
            if loss in merged:
                n_items = merged[loss].get("n_items") or load_split("ml-100k", "random", test_fraction=0.1, seed=0).train.n_items
                derive(merged[loss], n_items, loss)
        args.json.write_text(json.dumps(merged, indent=2))
        return merged
    rounds = args.rounds or (20 if args.quick else 400)
    joint_epochs = args.joint_epochs or (5 if args.quick else 200)
    secagg_rounds = args.secagg_rounds or (2 if args.quick else 20)
    eval_every = args.eval_every or (5 if args.quick else 10)
    split = load_split("ml-100k", "random", test_fraction=0.1, seed=0)
    t0, cpu0 = time.time(), cpu_seconds()
    result = {
        "dataset": "ml-100k", "split": "random 90/10 of all ratings, seed 0",
        "rounds": rounds, "joint_epochs": joint_epochs, "eval_every": eval_every, "quick": args.quick,
        "note": ("headline metric = best test value over evaluated rounds, as the PersonalFR code "
                 "reports (optimistic); last_round beside it. Host: 2 cores shared with other "
                 "jobs, timings are from a loaded machine."),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_average_at_start": os.getloadavg()},
        "ml-1m": ml1m_status(),
    }
    for loss in filter(None, args.losses.split(",")):
        result[loss] = compare(split, loss, rounds, joint_epochs, eval_every, not args.skip_grouped,
                               tuple(filter(None, args.variants.split(","))), args.progress)
        print(loss, json.dumps({k: v for k, v in result[loss].items()
                                if not isinstance(v, dict)}, indent=1), flush=True)
    if not args.skip_secagg:
        result["secagg"] = secagg_comparison(split, secagg_rounds)
        print("secagg", json.dumps(result["secagg"], indent=1), flush=True)
    if not args.skip_attack:
        result["attack"] = attack(split, 1 if args.quick else 2)
        print("attack", json.dumps(result["attack"], indent=1), flush=True)
    result["wall_seconds"] = time.time() - t0
    result["cpu_seconds"] = cpu_seconds() - cpu0
    result["host"]["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
