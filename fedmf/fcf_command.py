"""The FCF part of ``fedmf train --model fcf``: its options and its run.

The shared ``--factors``, ``--lr`` and ``--reg`` keep their FedMF meaning and defaults;
FCF has its own ``--fcf-*`` options (defaults: :class:`fedmf.als.ImplicitConfig`,
:class:`fedmf.fcf.FCFConfig`).
"""

from __future__ import annotations

import argparse

from .als import ImplicitConfig
from .data.implicit import IMPLICIT_SPLITS, load_implicit
from .engine import write_json
from .errors import ConfigError
from .fcf import FCFConfig, run_fcf
from .optim import OPTIMIZERS


def add_fcf_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("FCF (--model fcf)")
    group.add_argument("--fcf-factors", type=int, default=ImplicitConfig.factors, help="K")
    group.add_argument("--alpha", type=float, default=ImplicitConfig.alpha, help="confidence c = 1 + alpha r")
    group.add_argument("--fcf-reg", type=float, default=ImplicitConfig.reg, help="lambda")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=FCFConfig.optimizer,
                       help="server step on the item matrix")
    group.add_argument("--fcf-lr", type=float, default=FCFConfig.lr)
    group.add_argument("--fcf-lr-decay", type=float, default=FCFConfig.lr_decay)
    group.add_argument("--upload-clip", type=float, default=FCFConfig.upload_clip,
                       help="public bound on every uploaded gradient entry")
    group.add_argument("--participation", type=float, default=1.0,
                       help="share of users taking part in each round (seeded)")
    group.add_argument("--centralized-iterations", type=int, default=20,
                       help="iterations of the centralized ALS peer (0: skip it)")


def run_fcf_command(args: argparse.Namespace, backend) -> int:
    if args.split not in IMPLICIT_SPLITS:
        raise ConfigError(f"--model fcf needs an implicit split ({', '.join(IMPLICIT_SPLITS)}), "
                          f"got --split {args.split}; use --split loo")
    split = load_implicit(args.dataset, args.split, seed=args.seed)
    model = ImplicitConfig(factors=args.fcf_factors, alpha=args.alpha, reg=args.fcf_reg)
    fcf = FCFConfig(optimizer=args.optimizer, lr=args.fcf_lr, lr_decay=args.fcf_lr_decay,
                    upload_clip=args.upload_clip)
    print(f"{split.name}: {split.n_users} users, {split.n_items} items, "
          f"{split.train_indices.size} training interactions; FCF over {backend.name}")
    summary, _ = run_fcf(split, backend, args.rounds, model=model, fcf=fcf, seed=args.seed,
                         participation=args.participation, progress=True,
                         centralized_iterations=args.centralized_iterations or None)
    summary.update(dataset=args.dataset)
    line = lambda d: "  ".join(f"{k} {d[k]:.4f}" for k in ("hr_at_10", "ndcg_at_10", "precision_at_10", "map_at_10"))
    print(f"FCF ({backend.name}) test at best-validation round {summary['best_round']}: {line(summary)}")
    print(f"FCF last round: {line(summary['last_round'])}")
    if "centralized" in summary:
        print(f"centralized ALS (same K, alpha, lambda, initial Y): {line(summary['centralized'])}")
    print(f"{summary['seconds_per_round']:.3f} s/round")
    if args.json:
        write_json(args.json, summary)
    return 0
