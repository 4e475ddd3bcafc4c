"""``fedmf train --model fcf``: FCF's options and its run.

The shared ``--factors``, ``--lr`` and ``--reg`` keep their FedMF meaning and defaults
(and are refused with ``--model fcf``); FCF has its own ``--fcf-*`` options (defaults:
:class:`fedmf.als.ImplicitConfig`, :class:`fedmf.fcf.FCFConfig`).
"""

from __future__ import annotations

import argparse

from ..als import ImplicitConfig
from ..data.implicit import IMPLICIT_SPLITS, load_implicit
from ..engine import write_json
from ..fcf import ALS_ITERATIONS, FCFConfig, run_fcf
from ..optim import OPTIMIZERS
from .options import build_backend, finite_float, int_at_least

TITLE = "FCF (--model fcf): implicit-feedback collaborative filtering"
SPLITS = IMPLICIT_SPLITS
#: --participation when not given: every user in every round
PARTICIPATION = 1.0


def add_arguments(group) -> None:
    group.add_argument("--fcf-factors", type=int_at_least(1), default=ImplicitConfig.factors, help="K")
    group.add_argument("--alpha", type=finite_float(low=0), default=ImplicitConfig.alpha,
                       help="confidence c = 1 + alpha r")
    group.add_argument("--fcf-reg", type=finite_float(low=0), default=ImplicitConfig.reg, help="lambda")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=FCFConfig.optimizer,
                       help="server step on the item matrix")
    group.add_argument("--fcf-lr", type=finite_float(low=0, strict=True), default=FCFConfig.lr,
                       help="server learning rate")
    group.add_argument("--fcf-lr-decay", type=finite_float(low=0, strict=True, high=1),
                       default=FCFConfig.lr_decay, help="per-round factor on the server learning rate")
    group.add_argument("--upload-clip", type=finite_float(low=0, strict=True), default=FCFConfig.upload_clip,
                       help="public bound on every uploaded gradient entry")
    group.add_argument("--centralized-iterations", type=int_at_least(0), default=ALS_ITERATIONS,
                       help="iterations of the centralized ALS peer (0: skip it)")


def run(args: argparse.Namespace) -> int:
    backend = build_backend(args.backend, args.backend_option)
    split = load_implicit(args.dataset, args.split, seed=args.seed)
    model = ImplicitConfig(factors=args.fcf_factors, alpha=args.alpha, reg=args.fcf_reg)
    fcf = FCFConfig(optimizer=args.optimizer, lr=args.fcf_lr, lr_decay=args.fcf_lr_decay,
                    upload_clip=args.upload_clip)
    print(f"{split.name}: {split.n_users} users, {split.n_items} items, "
          f"{split.train_indices.size} training interactions; FCF over {backend.name}")
    summary, _ = run_fcf(split, backend, args.rounds, model=model, fcf=fcf, seed=args.seed,
                         participation=args.participation or PARTICIPATION, progress=True, bar=not args.no_progress,
                         centralized_iterations=args.centralized_iterations or None)
    summary.update(dataset=args.dataset)
    line = lambda d: "  ".join(f"{k} {d[k]:.4f}" for k in ("hr_at_10", "ndcg_at_10", "precision_at_10", "map_at_10"))
    print(f"FCF ({backend.name}) test at best-validation round {summary['best_round']}: {line(summary)}")
    print(f"FCF last round: {line(summary['last_round'])}")
    if "centralized" in summary:
        print(f"centralized ALS (same K, alpha, lambda, initial Y) at best validation: {line(summary['centralized'])}")
        print(f"centralized ALS last iteration: {line(summary['centralized']['last_iteration'])}")
    print(f"{summary['seconds_per_round']:.3f} s/round")
    if args.json:
        write_json(args.json, summary)
    return 0
