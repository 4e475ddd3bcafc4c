"""``fedmf attack``: the gradient-leakage attack against FedMF over a backend, with a JSON report.

Trains ``--rounds`` rounds (default 2) over the backend, records exactly what its server
decodes, runs the attack on the last two rounds for every user, and reports the fraction
of ratings recovered exactly, the reconstruction RMSE, the rated-set precision and recall,
and the same figures for the no-knowledge baseline. Unless ``--guard-victims 0``, it also
shows the "declare the others dropped" attack on SecAgg with the input guard set too low
and enforced. ``--plot`` writes reconstructed vs true ratings for this backend and a
second one (``--compare``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from secagg.errors import SecaggError

from attacks.evaluate import FLOAT_TOL, evaluate_backend, guard_demonstration

from ..data import load_split
from ..errors import ConfigError
from .options import add_training_arguments, backend_options, model_config

NAME = "attack"
HELP = "gradient-leakage attack on FedMF uploads: exact ratings recovered vs a no-knowledge baseline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2, help="rounds trained; the attack uses the last two")
    parser.add_argument("--users", type=int, default=0,
                        help="attack a seeded random sample of this many users (0: all)")
    parser.add_argument("--tol", type=float, default=FLOAT_TOL,
                        help="relative tolerance of the attack's structure checks")
    parser.add_argument("--guard-victims", type=int, default=20,
                        help="victims of the guard demonstration on SecAgg (0: skip it)")
    parser.add_argument("--guard-others", type=int, default=8,
                        help="honest clients per cohort the server declares dropped")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="write reconstructed vs true ratings here")
    parser.add_argument("--compare", default=None,
                        help="second backend of the plot (default: plain, or secagg when --backend is plain)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the JSON report here")
    parser.add_argument("--model", choices=("fedmf", "personalfr"), default="fedmf",
                        help="personalfr: rated items (and ratings) from one decoder upload")
    parser.add_argument("--clients", type=int, default=None,
                        help="personalfr: clients over a random user partition (default: one user each)")


def run(args: argparse.Namespace) -> int:
    if args.model == "personalfr":
        return _run_personalfr(args)
    if args.rounds < 2:
        raise ConfigError(f"--rounds must be >= 2 (the attack links two rounds), got {args.rounds}")
    config = model_config(args)
    split = load_split(args.dataset, args.split, seed=args.seed)
    users = _sample_users(split.train.n_users, args.users, args.seed)
    options = backend_options(args.backend_option)
    report, guesses = _evaluate(split, args.backend, config, args, users, options)
    report.update(dataset=args.dataset, split=args.split, model=asdict(config),
                  users_sampled=args.users or None)
    _print(report)
    if args.guard_victims > 0:
        guard = guard_demonstration(split, config=config, mode=args.mode, victims=args.guard_victims,
                                    others=args.guard_others, seed=args.seed)
        report["guard"] = guard
        low, enforced = guard["guard_too_low"], guard["guard_enforced"]
        print(f"guard too low (secagg, min_inputs=1, t=1, cohort {guard['cohort_size']}): "
              f"{guard['victims']} victims, exact {low['exact_fraction']:.4f}; enforced (t="
              f"{enforced['t']}): {enforced['rounds_refused']}/{enforced['rounds_attempted']} rounds refused")
    if args.plot:
        from attacks.plot import plot_reconstruction

        other = args.compare or ("secagg" if args.backend == "plain" else "plain")
        other_report, other_guesses = _evaluate(split, other, config, args, users, {})
        _print(other_report)
        report["plot"] = {"path": str(args.plot), "compare": other_report}
        plot_reconstruction([(args.backend, guesses, report), (other, other_guesses, other_report)],
                            args.plot, seed=args.seed)
        print(f"plot written to {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=_json_default))
    return 0


def _evaluate(split, backend, config, args, users, options):
    try:
        return evaluate_backend(split, backend, config=config, mode=args.mode, rounds=args.rounds,
                                users=users, seed=args.seed, backend_options=options, tol=args.tol)
    except (SecaggError, TypeError) as exc:
        raise ConfigError(f"backend {backend!r}: {exc}") from exc


def _sample_users(n_users: int, sample: int, seed: int) -> np.ndarray | None:
    if sample < 0:
        raise ConfigError(f"--users must be >= 0, got {sample}")
    if sample == 0 or sample >= n_users:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_users, size=sample, replace=False))


def _print(report: dict) -> None:
    base = report["baseline"]
    print(f"{report['backend']} ({report['mode']}): {report['users_attacked']} users, "
          f"{report['ratings_attacked']} ratings; status {report['status_counts']}")
    print(f"  attack:   exact {report['exact_fraction']:.4f}  rmse {report['reconstruction_rmse']:.4f}  "
          f"rated-set precision {report['rated_set_precision']:.4f} recall {report['rated_set_recall']:.4f}")
    print(f"  baseline: exact {base['exact_fraction']:.4f}  rmse {base['reconstruction_rmse']:.4f}  "
          f"rated-set precision {base['rated_set_precision']:.4f} recall {base['rated_set_recall']:.4f}")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _run_personalfr(args: argparse.Namespace) -> int:
    """PersonalFR: attack every client's first decoder upload (attacks.personalfr_leakage)."""
    from attacks.personalfr_leakage import run_attack
    from ..personalfr import FedConfig

    split = load_split(args.dataset, "random", test_fraction=0.1, seed=args.seed)
    try:
        report = run_attack(split, args.backend, config=FedConfig(batch_users=1 if args.clients is None else 5),
                            clients=args.clients, rounds=args.rounds, seed=args.seed,
                            backend_options=backend_options(args.backend_option)).as_dict()
    except (SecaggError, TypeError) as exc:
        raise ConfigError(f"backend {args.backend!r}: {exc}") from exc
    report.update(dataset=args.dataset, split="random 90/10")
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0
