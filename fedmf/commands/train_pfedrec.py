"""``fedmf train --model pfedrec``: PFedRec's options and its run.

Defaults are the official code's (:class:`fedmf.pfedrec.PFedRecConfig`): all users every
round unless ``--participation`` says otherwise; ``--rounds`` the number of rounds.
"""

from __future__ import annotations

import argparse

from ..data.implicit import LOO_TIES, load_implicit
from ..engine import write_json
from ..pfedrec import VARIANTS, PFedRecConfig, make_engine, run_summary
from .options import build_backend, finite_float, int_at_least

TITLE = "PFedRec (--model pfedrec): dual personalization"
SPLITS = ("loo",)
#: --participation when not given
PARTICIPATION = PFedRecConfig.sample_fraction


def add_arguments(group) -> None:
    d = PFedRecConfig
    group.add_argument("--pfedrec-variant", choices=VARIANTS, default=d.variant,
                       help="pfedrec: dual personalization; fedmf: the FedMF-implicit baseline")
    group.add_argument("--pfedrec-factors", type=int_at_least(1), default=d.latent_dim, help="latent dimension")
    group.add_argument("--pfedrec-lr", type=finite_float(low=0, strict=True), default=d.lr,
                       help="score-function learning rate")
    group.add_argument("--lr-eta", type=finite_float(low=0, strict=True), default=d.lr_eta,
                       help="item learning rate = lr x num_items x lr_eta (the code's rule)")
    group.add_argument("--negatives", type=int_at_least(1), default=d.n_neg, help="sampled negatives per positive")
    group.add_argument("--batch-size", type=int_at_least(1), default=d.batch_size, help="local batch size")
    group.add_argument("--ldp-scale", type=finite_float(low=0), default=d.ldp_scale,
                       help="Laplace noise scale lambda on every uploaded entry (0: off)")
    group.add_argument("--pfedrec-clip", type=finite_float(low=0, strict=True), default=d.upload_clip,
                       help="public bound on every uploaded entry (clipped on the device)")
    group.add_argument("--ties", choices=LOO_TIES, default="file",
                       help="leave-one-out ties in time: file order (the PFedRec code) or item id")


def run(args: argparse.Namespace) -> int:
    backend = build_backend(args.backend, args.backend_option)
    split = load_implicit(args.dataset, "loo", seed=0, ties=args.ties)
    config = PFedRecConfig(latent_dim=args.pfedrec_factors, batch_size=args.batch_size,
                           lr=args.pfedrec_lr, lr_eta=args.lr_eta, n_neg=args.negatives,
                           rounds=args.rounds, sample_fraction=args.participation or PARTICIPATION,
                           variant=args.pfedrec_variant, ldp_scale=args.ldp_scale,
                           upload_clip=args.pfedrec_clip, seed=args.seed)
    print(f"{split.name}: {split.n_users} users, {split.n_items} items, "
          f"{split.train_indices.size} training interactions; {config.variant} over {backend.name}")
    engine = make_engine(split, backend, config=config)
    engine.run(args.rounds, progress=True, bar=not args.no_progress, show=("val_hr_at_10", "hr_at_10", "ndcg_at_10"))
    summary = run_summary(engine)
    summary.update(dataset=args.dataset)
    print(f"{config.variant} ({backend.name}) test at best-validation round {summary['best_round']}: "
          f"HR@10 {summary['hr_at_10']:.4f}  NDCG@10 {summary['ndcg_at_10']:.4f}; global table: "
          f"HR@10 {summary['global_table']['hr_at_10']:.4f}; {summary['seconds_per_round']:.3f} s/round")
    if args.json:
        write_json(args.json, summary)
    return 0
