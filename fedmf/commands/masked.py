"""``fedmf train --mask personalized``: its options, their checks, and its report.

The options of the masked protocol (our FedMMF reconstruction, :mod:`fedmf.masked`)
apply only with ``--mask personalized``; each policy's options only with that policy.
:func:`validate` refuses any that would be ignored. The experiment itself
(:mod:`attacks.masked_experiment`) runs the gradient-leakage attack, so it is imported
only when the command runs: :mod:`fedmf` never imports :mod:`attacks` at module level.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..data import load_split
from ..errors import ConfigError
from ..masked import AUDIT_METRICS, MASK_MODELS, POLICIES
from ..warmup import warm_numba_kernels
from .options import build_backend, finite_float, int_at_least, model_config, write_json

#: datasets with public item features (the ridge mask regresses on their genre flags)
FEATURE_DATASETS = ("ml-100k", "ml-1m")
#: option -> (the condition under which it applies, as text; the test of that condition)
_APPLIES = {
    "mask_alpha": ("--mask-model ridge", lambda a: a.mask_model == "ridge"),
    "selective_noise": ("--mask-noise > 0", lambda a: a.mask_noise > 0),
    "min_fitted": ("--policy count", lambda a: a.policy == "count"),
    "audit_margin": ("--policy audit or --selective-noise", lambda a: a.policy == "audit" or a.selective_noise),
    "audit_metric": ("--policy audit", lambda a: a.policy == "audit"),
    "compare_encrypt_all": ("a --policy other than none", lambda a: a.policy != "none"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "personalized masks (FedMMF, our reconstruction)",
        "every option below needs --mask personalized")
    actions = []

    def add(*flags, **options):
        actions.append(group.add_argument(*flags, **options))

    add("--mask", choices=("none", "personalized"), default="none",
        help="personalized: train on targets masked by a local model, predict with it added back")
    add("--mask-model", choices=MASK_MODELS, default="ridge",
        help="local model: ridge on public genres (MovieLens), the user's mean, or a local MF")
    add("--mask-alpha", type=finite_float(low=0, strict=True), default=30.0,
        help="ridge strength of --mask-model ridge")
    add("--mask-noise", type=finite_float(low=0), default=0.0, metavar="SIGMA",
        help="add private N(0, SIGMA^2) noise (os.urandom) to each training rating's mask")
    add("--mask-scale", type=finite_float(low=0, strict=True), nargs=2, metavar=("LOW", "HIGH"),
        help="shrink each user's residuals by a private scale drawn from U[LOW, HIGH], "
             "0 < LOW <= HIGH <= 1")
    add("--selective-noise", action="store_true",
        help="keep --mask-noise only for users it lets pass the audit (others keep the clean mask)")
    add("--refit", action="store_true",
        help="device-side refit of the private user vector and bias on the denoised targets")
    add("--policy", choices=POLICIES, default="none",
        help="adaptive protocol: per user and round, plaintext or --backend (encrypting); "
             "count: encrypt masks fitted on < --min-fitted ratings; audit: self-audit with "
             "the gradient-leakage attack; all / never: encrypt every / no upload")
    add("--min-fitted", type=int_at_least(0), default=100, help="count policy threshold")
    add("--audit-margin", type=finite_float(low=0), default=0.05,
        help="audit policy: encrypt when the attack beats the no-knowledge guess by more")
    add("--audit-metric", choices=("both", *AUDIT_METRICS), default="both",
        help="audit advantage: exact-rating fraction, RMSE (rating units), or both "
             "(plaintext only if within the margin under each)")
    add("--compare-encrypt-all", type=int_at_least(0), default=0, metavar="ROUNDS",
        help="also time ROUNDS rounds with every upload encrypted (the cost peer)")
    add("--participants", type=int_at_least(2), metavar="N",
        help="train with a seeded random subset of N users (cost measurements)")
    add("--no-plain-reference", action="store_true",
        help="skip the plain FedMF reference run (accuracy and attack comparison)")
    parser.set_defaults(_mask_defaults={a.dest: a.default for a in actions})


def validate(args: argparse.Namespace) -> None:
    """Refuse mask options that would be ignored, and values out of range together."""
    given = [dest for dest, default in args._mask_defaults.items()
             if dest != "mask" and getattr(args, dest) != default]
    if args.mask != "personalized":
        if given:
            raise ConfigError(f"{_flags(given)} {'needs' if len(given) == 1 else 'need'} --mask personalized")
        return
    for dest in given:
        if dest in _APPLIES and not _APPLIES[dest][1](args):
            raise ConfigError(f"{_flag(dest)} applies only with {_APPLIES[dest][0]}")
    if args.mask_scale is not None:
        low, high = args.mask_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"--mask-scale needs 0 < LOW <= HIGH <= 1, got {low:g} {high:g}")
    if args.mask_model == "ridge" and args.dataset not in FEATURE_DATASETS:
        raise ConfigError(f"--mask-model ridge regresses on public item genres, which only "
                          f"{', '.join(FEATURE_DATASETS)} have; use --mask-model bias or mf for {args.dataset}")


def run(args: argparse.Namespace) -> int:
    """Train on masked targets, print the comparison, write the JSON summary."""
    from attacks.masked_experiment import MaskedRunConfig, train_masked

    # policy none: the server's decoded view is what the attack measures
    backend = build_backend(args.backend, args.backend_option, record_view=args.policy == "none")
    split = load_split(args.dataset, args.split, seed=args.seed)
    run = MaskedRunConfig(
        dataset=args.dataset, mask_model=args.mask_model, mask_alpha=args.mask_alpha,
        mask_noise=args.mask_noise, refit=args.refit, selective_noise=args.selective_noise,
        mask_scale=tuple(args.mask_scale) if args.mask_scale else None,
        policy=args.policy, min_fitted=args.min_fitted, audit_margin=args.audit_margin,
        audit_metrics=AUDIT_METRICS if args.audit_metric == "both" else (args.audit_metric,),
        rounds=args.rounds, mode=args.mode, seed=args.seed,
        compare_plain=not args.no_plain_reference, compare_encrypt_all_rounds=args.compare_encrypt_all,
        participants=args.participants,
    )
    run.users(split)  # a cohort larger than the data set is refused before training
    if args.policy != "none" and not backend.hides_updates:
        print("note: the encrypting path is the plain backend (a stand-in): decisions, accuracy and "
              "leakage are real, encryption costs are not measured")
    print(f"{split.name}: personalized masks ({run.mask_model}), backend {backend.name}, "
          f"policy {run.policy}, mode {run.mode}")
    warm_numba_kernels()
    summary = train_masked(split, backend, model_config(args), run)
    summary.update(dataset=args.dataset, split=args.split)
    attack = summary["attack"]
    print(f"mask + FedMF: rmse {summary['test_rmse']:.4f}, {summary['seconds_per_round']:.3f} s/round, "
          f"encrypted fraction {summary['encrypted_fraction']:.3f}")
    if "plain_fedmf_test_rmse" in summary:
        print(f"plain FedMF: rmse {summary['plain_fedmf_test_rmse']:.4f} "
              f"(difference {summary['rmse_difference']:+.4f})")
    if attack["exact_fraction"] is not None:
        print(f"attack on {attack['users_recovered']} users in clear: exact {attack['exact_fraction']:.3f} "
              f"(guess {attack['guess_exact_fraction']:.3f}), rmse {attack['rmse']:.3f} "
              f"(guess {attack['guess_rmse']:.3f})")
    if args.json:
        write_json(args.json, summary, default=_json_default)
    return 0


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _flags(dests: list[str]) -> str:
    return ", ".join(_flag(d) for d in dests)


def _json_default(value):
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
