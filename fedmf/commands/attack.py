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

import numpy as np
from secagg import available_backends
from secagg.errors import SecaggError

from ..data import load_split
from ..errors import ConfigError
from .options import (
    add_training_arguments,
    backend_options,
    build_backend,
    finite_float,
    int_at_least,
    model_config,
    output_path,
    plot_path,
    write_json,
)

NAME = "attack"
HELP = "gradient-leakage attack on FedMF uploads: exact ratings recovered vs a no-knowledge baseline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from attacks.evaluate import FLOAT_TOL  # the CLI imports attacks lazily: fedmf never does

    add_training_arguments(parser)
    parser.add_argument("--rounds", type=int_at_least(2), default=2,
                        help="rounds trained; the attack links the last two")
    parser.add_argument("--users", type=int_at_least(0), default=0,
                        help="attack a seeded random sample of this many users (0: all)")
    parser.add_argument("--tol", type=finite_float(low=0, strict=True), default=FLOAT_TOL,
                        help="relative tolerance of the attack's structure checks")
    parser.add_argument("--guard-victims", type=int_at_least(0), default=20,
                        help="victims of the guard demonstration on SecAgg (0: skip it)")
    parser.add_argument("--guard-others", type=int_at_least(1), default=8,
                        help="honest clients per cohort the server declares dropped")
    parser.add_argument("--plot", type=plot_path, metavar="PNG",
                        help="write reconstructed vs true ratings here (needs matplotlib)")
    parser.add_argument("--compare", default=None, choices=available_backends(),
                        help="second backend of the plot (default: plain, or secagg when --backend is plain)")
    parser.add_argument("--json", type=output_path, metavar="PATH", help="write the JSON report here")
    parser.add_argument("--model", choices=("fedmf", *ITEM_SET_ATTACKS), default="fedmf",
                        help="fedmf: ratings from two rounds of item gradients; fcf / pfedrec / "
                             "personalfr: each user's item set from the last round's upload")
    parser.add_argument("--clients", type=int_at_least(2), default=None,
                        help="personalfr: clients over a random user partition (default: one user each)")


#: options of the FedMF attack only, refused with the other models
FEDMF_ONLY = ("split", "users", "tol", "guard_victims", "guard_others", "plot", "compare", "mode", "order",
              "factors", "lr", "reg", "no_biases")


def validate(args: argparse.Namespace) -> None:
    if args.model != "fedmf":
        given = [d for d in FEDMF_ONLY if getattr(args, d) != args.parser.get_default(d)]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} applies to --model fedmf only")
    if args.model != "personalfr" and args.clients is not None:
        raise ConfigError("--clients applies to --model personalfr only")
    if args.model != "fedmf":
        return
    if args.clients is not None:
        raise ConfigError("--clients applies to --model personalfr only")
    if args.compare is not None and args.plot is None:
        raise ConfigError("--compare applies only with --plot")
    if args.tol >= 1:
        raise ConfigError(f"--tol is a relative tolerance and must be < 1, got {args.tol:g}")


def run(args: argparse.Namespace) -> int:
    from attacks.evaluate import guard_demonstration

    if args.model != "fedmf":
        return _run_item_set_attack(args)
    config = model_config(args)
    build_backend(args.backend, args.backend_option)  # a bad -o option is refused before any training
    options = backend_options(args.backend_option)
    split = load_split(args.dataset, args.split, seed=args.seed)
    users = _sample_users(split.train.n_users, args.users, args.seed)
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
                            args.plot, rating_scale=split.train.rating_scale, seed=args.seed)
        print(f"plot written to {args.plot}")
    if args.json:
        write_json(args.json, report, default=_json_default)
    return 0


def _evaluate(split, backend, config, args, users, options):
    from attacks.evaluate import evaluate_backend

    try:
        return evaluate_backend(split, backend, config=config, mode=args.mode, rounds=args.rounds,
                                users=users, seed=args.seed, backend_options=options, tol=args.tol)
    except (SecaggError, TypeError) as exc:
        raise ConfigError(f"backend {backend!r}: {exc}") from exc


def _sample_users(n_users: int, sample: int, seed: int) -> np.ndarray | None:
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


def _attack_fcf(args: argparse.Namespace, options: dict) -> dict:
    from attacks.fcf_leakage import evaluate_backend
    from ..data import load_implicit

    split = load_implicit(args.dataset, "loo", seed=args.seed)
    report = evaluate_backend(split, args.backend, round=args.rounds, seed=args.seed, backend_options=options)
    return report | {"split": "loo"}


def _attack_pfedrec(args: argparse.Namespace, options: dict) -> dict:
    from attacks.pfedrec_leakage import attack_backend
    from ..data import load_implicit
    from ..pfedrec import PFedRecConfig

    split = load_implicit(args.dataset, "loo", seed=0, ties="file")
    report, _ = attack_backend(split, args.backend, config=PFedRecConfig(seed=args.seed),
                               backend_options=options, rounds=args.rounds, seed=args.seed)
    return report.as_dict() | {"split": "loo (ties by file order)"}


def _attack_personalfr(args: argparse.Namespace, options: dict) -> dict:
    from attacks.personalfr_leakage import run_attack
    from ..personalfr import FedConfig

    split = load_split(args.dataset, "random", test_fraction=0.1, seed=args.seed)
    report = run_attack(split, args.backend, config=FedConfig(batch_users=1 if args.clients is None else 5),
                        clients=args.clients, rounds=args.rounds, seed=args.seed, backend_options=options)
    return report.as_dict() | {"split": "random 90/10"}


#: --model -> the attack that recovers each user's item set from one upload
ITEM_SET_ATTACKS = {"fcf": _attack_fcf, "pfedrec": _attack_pfedrec, "personalfr": _attack_personalfr}


def _run_item_set_attack(args: argparse.Namespace) -> int:
    """Train ``--rounds`` rounds of the model over the backend and attack every upload of
    the last one (the modules in :mod:`attacks`); precision and recall beside the baseline."""
    build_backend(args.backend, args.backend_option)  # a bad -o option is refused before any training
    try:
        report = ITEM_SET_ATTACKS[args.model](args, backend_options(args.backend_option))
    except (SecaggError, TypeError) as exc:
        raise ConfigError(f"backend {args.backend!r}: {exc}") from exc
    report.update(dataset=args.dataset, model=args.model, rounds=args.rounds)
    print(json.dumps(report, indent=2, default=_json_default))
    if args.json:
        write_json(args.json, report, default=_json_default)
    return 0
