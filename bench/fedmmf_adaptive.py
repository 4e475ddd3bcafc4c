"""Personalized masks + adaptive encryption (our FedMMF reconstruction) on MovieLens 100K u1.

Four measurements, each against its peer in the same run:

1. accuracy: mask + FedMF vs plain FedMF (plain backend, same model, seed, rounds);
2. leakage: the gradient-leakage attack on every plaintext upload (mask only, and with the
   self-audit policy on exact AND RMSE, on exact only, and with the selective private
   scale + noise mask plus the device-side refit), scored on the TRUE ratings
   against the no-knowledge guess with the design-aware de-masking estimators, and on
   plain FedMF uploads;
3. trade-off: masks with private noise sigma (``--sigmas``), a private residual scale,
   and other local models:
   test RMSE (with the device-side refit) vs plain FedMF, and the fraction of users whose
   masked targets (what the attack recovers exactly) stay within the audit margin, for
   the estimators and for the oracle reference (server handed the private local model);
4. cost: the adaptive protocol (self-audit; count with the median number of ratings as
   threshold; self-audit with the selective scale + noise mask) vs encrypting every
   upload, with packed Paillier (2048-bit key), on a seeded subset of users for a few
   rounds; the runs alternate (all, audit, count, selective, all, ...)
   ``--cost-repeats`` times; wall and process-CPU seconds per round as mean, min, max,
   and the ratio of means.

``--quick`` (< 60 s): a 60-user synthetic split, a 1024-bit test key (opt-in), few rounds.

    python bench/fedmmf_adaptive.py [--quick] [--json PATH] [--cost-repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from fedmf.data import load_split, random_holdout, synthetic_ratings
from attacks.leakage import mask_leakage
from attacks.masked_experiment import MaskedRunConfig, make_masks, public_prior, train_masked
from fedmf.masked import refit_private, test_rmse
from fedmf.model import ModelConfig
from fedmf.trainer import FedMFTrainer
from fedmf.warmup import warm_numba_kernels
from secagg import make_backend
from secagg.errors import InvalidInputError

ATTACK_KEYS = ("users_recovered", "exact_fraction", "guess_exact_fraction", "rmse", "guess_rmse",
               "max_user_advantage", "max_user_advantage_rmse", "masked_targets_rmse",
               "users_within_margin", "per_estimator", "best_estimator_counts", "best_rmse_estimator_counts")
MARGIN = 0.05
#: (noise sigma, private scale range) of the headline selective mask: tried before this run,
#: it kept test RMSE at plain FedMF's with about a fifth of the users passing the audit
SELECTIVE = (0.1, (0.02, 0.04))
REFERENCE_LR = ModelConfig().lr  # the plain FedMF peer of the accuracy target
MORE_MARGINS = (0.1, 0.2)


def _run(split, backend, dataset, **options) -> dict:
    run = MaskedRunConfig(dataset=dataset, **options)
    t0 = time.perf_counter()
    summary = train_masked(split, backend, ModelConfig(), run, log=lambda *_: None)
    summary["wall_seconds"] = time.perf_counter() - t0
    return summary


def _attack(summary: dict, key: str = "attack") -> dict:
    return {k: summary[key].get(k) for k in ATTACK_KEYS}


def _train(split, offset, rounds, lr):
    """FedMF (plain backend) on ``split``; None if training diverged (non-finite uploads)."""
    trainer = FedMFTrainer(split, config=ModelConfig(lr=lr), prediction_offset=offset)
    try:
        for _ in range(rounds):
            trainer.run_round()
    except InvalidInputError:
        return None
    return trainer


def trade_off(split, dataset, rows, rounds, prior) -> list[dict]:
    """One row per mask (model, private noise sigma, private scale range) and learning
    rate: accuracy and audit pass rates."""
    plain, out = {}, []
    for kind, sigma, scale, lr, selective in [(None, 0, None, REFERENCE_LR, False), *rows]:
        if lr not in plain:
            t = _train(split, None, rounds, lr)
            plain[lr] = (t.history[-1].test_rmse, test_rmse(t, refit_private(t, split.train.ratings)))
        if kind is None:
            continue
        masked = make_masks(split, MaskedRunConfig(dataset, kind, mask_noise=sigma, mask_scale=scale,
                                                   selective_noise=selective, audit_margin=MARGIN), prior)
        row = {"mask_model": kind, "noise_sigma": sigma, "private_scale": scale, "selective_noise": selective,
               "noisy_user_fraction": len(masked.noisy_users) / len(masked.masks), "lr": lr, "rounds": rounds,
               "plain_fedmf_test_rmse": plain[lr][0], "plain_fedmf_refit_test_rmse": plain[lr][1],
               "reference_plain_fedmf_test_rmse": plain[REFERENCE_LR][0]}
        trainer = _train(masked.split, masked.test_offset, rounds, lr)
        if trainer is None:
            row["diverged"] = True
        else:
            refit = test_rmse(trainer, refit_private(trainer, split.train.ratings - masked.clean_train_mask),
                              masked.test_offset)
            row.update(diverged=False, test_rmse=trainer.history[-1].test_rmse, test_rmse_refit=refit,
                       rmse_difference=refit - plain[REFERENCE_LR][0],
                       rmse_difference_same_lr=refit - plain[lr][0],
                       rmse_difference_vs_plain_refit=refit - plain[lr][1])
        row["leakage"] = mask_leakage(masked, split.train.ratings, prior, MARGIN, MORE_MARGINS)
        out.append(row)
        print(_row_line(row), flush=True)
    return out


def _row_line(row) -> str:
    est, orc = row["leakage"]["estimators"], row["leakage"]["oracle"]
    acc = "diverged" if row["diverged"] else f"rmse {row['test_rmse_refit']:.4f} ({row['rmse_difference']:+.4f})"
    return (f"{row['mask_model']} sigma {row['noise_sigma']} scale {row['private_scale']} selective "
            f"{row['selective_noise']} (noisy {row['noisy_user_fraction']:.3f}) lr {row['lr']}: "
            f"{acc}; within margin "
            f"{est['fraction_within_margin']:.3f} (oracle {orc['fraction_within_margin']:.3f}); exact "
            f"{est['exact_fraction']:.3f} rmse {est['rmse']:.3f} (guess {est['guess_exact_fraction']:.3f}, "
            f"{est['guess_rmse']:.3f})")


def cost(split, dataset, encrypted, mask_model, users, rounds, repeats, median_fitted) -> dict:
    """Alternating repeated runs of encrypt-all and each adaptive policy, same users and rounds."""
    variants = {
        "encrypt_all": dict(policy="all"),
        "audit": dict(policy="audit"),
        "count": dict(policy="count", min_fitted=median_fitted),
        "audit_selective_scale_noise": dict(policy="audit", mask_noise=SELECTIVE[0], mask_scale=SELECTIVE[1],
                                            selective_noise=True),
    }
    runs = {name: [] for name in variants}
    for _ in range(repeats):
        for name, options in variants.items():
            s = _run(split, encrypted, dataset, mask_model=mask_model, rounds=rounds, participants=users,
                     compare_plain=False, **options)
            runs[name].append(s)
            print(f"cost {name}: {s['seconds_per_round']:.2f} s/round wall, {s['cpu_seconds_per_round']:.2f} "
                  f"cpu, encrypted {s['encrypted_fraction']:.3f}", flush=True)
    spread = lambda xs: {"mean": float(np.mean(xs)), "min": float(np.min(xs)), "max": float(np.max(xs)),
                         "runs": [float(x) for x in xs]}
    peer_wall = [s["seconds_per_round"] for s in runs["encrypt_all"]]
    peer_cpu = [s["cpu_seconds_per_round"] for s in runs["encrypt_all"]]
    out = {"participants": runs["encrypt_all"][0]["participants"], "rounds": rounds, "repeats": repeats,
           "order": "alternating " + ", ".join(variants), "key_bits": encrypted.key.public_key.bits,
           "timing": "wall: mean over rounds of FedMFTrainer round time (all clients simulated serially in "
                     "one process); cpu: process CPU seconds per round (single process, no workers)"}
    for name, ss in runs.items():
        wall = [s["seconds_per_round"] for s in ss]
        cpu = [s["cpu_seconds_per_round"] for s in ss]
        entry = {"encrypted_fraction": float(np.mean([s["encrypted_fraction"] for s in ss])),
                 "wall_seconds_per_round": spread(wall), "cpu_seconds_per_round": spread(cpu)}
        if name != "encrypt_all":
            ratios = [w / p for w, p in zip(cpu, peer_cpu)]
            entry.update(
                ratio_wall_vs_encrypt_all=float(np.mean(wall) / np.mean(peer_wall)),
                ratio_cpu_vs_encrypt_all=float(np.mean(cpu) / np.mean(peer_cpu)),
                ratio_cpu_per_repeat=spread(ratios),
                policy_seconds_per_round=spread([s["policy_client_seconds_per_round"] for s in ss]),
                attack=_attack(ss[-1]),
                min_fitted=ss[-1].get("min_fitted"),
                mask={k: ss[-1]["mask"][k] for k in ("noise_sigma", "private_scale", "selective_noise", "noisy_users")})
        out[name] = entry
    return out


def plot_trade_off(rows, path: Path) -> None:
    """Fraction of users within the audit margin vs test-RMSE difference to plain FedMF,
    one point per trade-off row that trained (noise rows labelled by sigma)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    families = ((False, False, "o", "C0", "noise on every user"), (True, False, "s", "C3", "selective noise"),
                (True, True, "^", "C2", "selective scale + noise"))
    for selective, scaled, marker, colour, label in families:
        pts = [r for r in rows if not r["diverged"] and r["selective_noise"] == selective
               and (r["private_scale"] is not None) == scaled and r["mask_model"] == rows[0]["mask_model"]]
        x = [r["rmse_difference"] for r in pts]
        ax.plot(x, [r["leakage"]["estimators"]["fraction_within_margin"] for r in pts], marker, c=colour,
                label=f"{label}: estimators")
        ax.plot(x, [r["leakage"]["oracle"]["fraction_within_margin"] for r in pts], marker, c=colour, mfc="none",
                ms=10, label=f"{label}: oracle (handed f, s)")
        for r in pts:
            name = f"{r['noise_sigma']:g}" + (f"/{r['private_scale'][0]:g}-{r['private_scale'][1]:g}"
                                              if scaled else "")
            ax.annotate(name + (f" lr {r['lr']:g}" if r["lr"] != REFERENCE_LR else ""),
                        (r["rmse_difference"], r["leakage"]["estimators"]["fraction_within_margin"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(0.005, ls="--", c="grey", lw=0.8)
    ax.set_xlabel("test RMSE - plain FedMF (with device-side refit)")
    ax.set_ylabel(f"users within audit margin {MARGIN} (exact and RMSE)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _num(x: float) -> str:
    """A table number: 0.25 stays 0.25, 2.0 prints as 2."""
    return f"{x:g}"


def _vs(a, b) -> str:
    return f"{a:.3f} ({b:.3f})"


def _spread(s: dict) -> str:
    return f"{s['mean']:.2f} ({s['min']:.2f} to {s['max']:.2f})"


def markdown_tables(result: dict) -> str:
    """The README's FedMMF tables (accuracy, leakage, cost, trade-off) from a run's JSON."""
    acc, leak, sel = result["accuracy"], result["leakage"], result["self_audit_selective_noise"]
    plain = acc["plain_fedmf_test_rmse"]
    out = [f"Accuracy ({result['dataset']}, {result['rounds']} rounds; test RMSE, same model, seed and rounds):", "",
           "| run | test RMSE | vs plain FedMF | vs plain FedMF with the same refit |", "|---|---:|---:|---:|",
           f"| plain FedMF | {plain:.4f} | | |",
           f"| plain FedMF, device-side refit | {sel['plain_fedmf_refit_test_rmse']:.4f} | | |",
           f"| {result['mask_model']} mask + FedMF | {acc['masked_fedmf_test_rmse']:.4f} "
           f"| **{acc['rmse_difference']:+.4f}** | |",
           f"| adaptive protocol: selective scale + noise, device-side refit, self-audit (`{sel['command']}`) "
           f"| {sel['test_rmse']:.4f} | **{sel['rmse_difference']:+.4f}** | **{sel['rmse_difference_vs_plain_refit']:+.4f}** |",
           ""]
    base = leak["plain_fedmf"]
    out += [f"Leakage (no-knowledge guess over all users: {base['guess_exact_fraction']:.1%} exact, "
            f"RMSE {base['guess_rmse']:.3f}):", "",
            "| uploads attacked | users | exact fraction (their guess) | RMSE (their guess) |", "|---|---:|---:|---:|"]

    def leak_row(name, a, users=None):
        users = users if users is not None else a["users_recovered"]
        if not a["users_recovered"]:
            return f"| {name} | {users} | - | - |"
        return (f"| {name} | {users} | {_vs(a['exact_fraction'], a['guess_exact_fraction'])} "
                f"| {_vs(a['rmse'], a['guess_rmse'])} |")

    mask = result["mask_model"]
    out += [leak_row("plain FedMF", base), leak_row(f"{mask} mask only, all in clear", leak["mask_only"]),
            leak_row(f"{mask} mask, self-audit on exact and RMSE", leak["self_audit_plaintext_users"],
                     f"{leak['self_audit_plaintext_users']['users_recovered']} in clear "
                     f"(encrypts {leak['self_audit_encrypted_fraction']:.1%})"),
            leak_row(f"{mask} mask, self-audit on exact only: its plaintext users",
                     leak["self_audit_exact_only_plaintext_users"]),
            leak_row("**adaptive protocol above: its plaintext users**", sel["plaintext_users_attack"],
                     f"{sel['plaintext_users_attack']['users_recovered']} (encrypts {sel['encrypted_fraction']:.1%})"),
            ""]
    if "cost" in result:
        c = result["cost"]
        out += [f"Per-round cost with packed Paillier ({c['key_bits']}-bit key) on a seeded {c['participants']}-user "
                f"subset, {c['rounds']} rounds, {c['repeats']} alternating repeats of each policy (process CPU "
                "seconds per round, mean and range; the ratio is of the means, and its range is over the "
                "repeats, each against the encrypt-all run just before it):", "",
                "| policy | fraction encrypted | CPU s per round | vs encrypt-all | per repeat "
                "| attack on its plaintext users (vs guess) |", "|---|---:|---:|---:|---:|---|",
                f"| encrypt everything | {c['encrypt_all']['encrypted_fraction']:.3f} "
                f"| {_spread(c['encrypt_all']['cpu_seconds_per_round'])} | 1 | - | - |"]
        names = {"audit": f"self-audit, {mask} mask",
                 "count": f"count (encrypt masks fitted on < {c['count']['min_fitted']} ratings)",
                 "audit_selective_scale_noise": "**self-audit, selective scale + noise (the adaptive protocol above)**"}
        for key, name in names.items():
            e, a = c[key], c[key]["attack"]
            seen = (f"{a['users_recovered']} users: exact {a['exact_fraction']:.3f} vs {a['guess_exact_fraction']:.3f}, "
                    f"RMSE {a['rmse']:.3f} vs {a['guess_rmse']:.3f}") if a["users_recovered"] else "none in clear"
            r = e["ratio_cpu_per_repeat"]
            out.append(f"| {name} | {e['encrypted_fraction']:.3f} | {_spread(e['cpu_seconds_per_round'])} "
                       f"| **{e['ratio_cpu_vs_encrypt_all']:.2f}** | {r['min']:.2f} to {r['max']:.2f} | {seen} |")
        out.append("")
    out += [f"Trade-off ({result['rounds']} rounds each; \"within margin\" = users whose uploads the attack "
            "cannot exploit beyond the margin on either metric, with our estimators and with the oracle "
            "reference that is handed the user's private local model; \"vs plain + refit\" compares with "
            "plain FedMF given the same device-side refit; plot: `docs/fedmmf_tradeoff.png`):", "",
            "| local model | noise sigma | private scale | selective | lr | test RMSE (refit) | vs plain "
            "| vs plain + refit | within margin | oracle | exact fraction |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["trade_off"]:
        scale = "-" if r["private_scale"] is None else f"{_num(r['private_scale'][0])} to {_num(r['private_scale'][1])}"
        fit = ("diverged | - | -" if r["diverged"] else
               f"{r['test_rmse_refit']:.4f} | {r['rmse_difference']:+.4f} | {r['rmse_difference_vs_plain_refit']:+.4f}")
        est, orc = r["leakage"]["estimators"], r["leakage"]["oracle"]
        out.append(f"| {r['mask_model']} | {_num(r['noise_sigma'])} | {scale} | {'yes' if r['selective_noise'] else 'no'} "
                   f"| {_num(r['lr'])} | {fit} | {est['fraction_within_margin']:.3f} "
                   f"| {orc['fraction_within_margin']:.3f} | {est['exact_fraction']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic 60 users, small key; under 60 s")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rounds", type=int, help="training rounds (default 60; --quick 10)")
    parser.add_argument("--cost-users", type=int, help="users in the cost runs (default 120)")
    parser.add_argument("--cost-rounds", type=int, help="rounds in the cost runs (default 2)")
    parser.add_argument("--cost-repeats", type=int, help="alternating repeats of each cost run (default 3; --quick 1)")
    parser.add_argument("--sigmas", type=float, nargs="*",
                        help="noise levels of the trade-off rows (default 0 .25 .5 .75 1 1.5 2; --quick 0 3)")
    parser.add_argument("--skip-cost", action="store_true", help="no Paillier cost runs")
    parser.add_argument("--plot", type=Path, help="write the trade-off plot (PNG) here")
    parser.add_argument("--tables", type=Path, metavar="JSON",
                        help="print the README tables of a finished run's JSON and exit")
    args = parser.parse_args(argv)
    if args.tables:
        print(markdown_tables(json.loads(args.tables.read_text())))
        return {}
    if args.quick:
        dataset, mask_model = "synthetic", "bias"
        split = random_holdout(synthetic_ratings(n_users=60, n_items=50, density=0.3, min_per_user=5, seed=3),
                               0.2, seed=3, name="synthetic-60")
        key = {"key_bits": 1024, "allow_insecure_small_key": True}
        rounds, cost_users, cost_rounds = args.rounds or 10, None, args.cost_rounds or 2
        repeats, sigmas = args.cost_repeats or 1, args.sigmas or [0.0, 3.0]
        extra = [("bias", 0.0, (0.3, 1.0), 0.35, False), ("bias", 3.0, None, 0.35, True),
                 ("bias", *SELECTIVE, 0.35, True)]
    else:
        dataset, mask_model = "ml-100k", "ridge"
        split = load_split("ml-100k", "u1")
        key = {"key_bits": 2048}
        rounds, cost_users, cost_rounds = args.rounds or 60, args.cost_users or 120, args.cost_rounds or 2
        repeats = args.cost_repeats or 3
        sigmas = args.sigmas if args.sigmas is not None else [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
        extra = [("ridge", 2.0, None, 0.15, False), ("ridge", 0.0, (0.3, 1.0), 0.35, False),
                 ("bias", 0.0, None, 0.35, False), ("mf", 0.0, None, 0.35, False),
                 ("ridge", 1.5, None, 0.35, True), ("ridge", 2.0, None, 0.35, True)]
        extra += [("ridge", 0.1, scale, 0.35, True) for scale in ((0.03, 0.06), SELECTIVE[1], (0.015, 0.025))]
    prior = public_prior(split)
    common = dict(mask_model=mask_model, rounds=rounds)
    mask_only = _run(split, make_backend("plain", record_view=True), dataset, **common)
    audit = _run(split, make_backend("plain"), dataset, policy="audit", compare_plain=False, **common)
    audit_exact = _run(split, make_backend("plain"), dataset, policy="audit", audit_metrics=("exact",),
                       compare_plain=False, **common)
    selective = _run(split, make_backend("plain"), dataset, policy="audit", mask_noise=SELECTIVE[0],
                     mask_scale=SELECTIVE[1], selective_noise=True, refit=True, **common)
    curve = trade_off(split, dataset, [(mask_model, s, None, REFERENCE_LR, False) for s in sigmas] + extra,
                      rounds, prior)
    result = {
        "dataset": split.name, "quick": args.quick, "mask_model": mask_model, "rounds": rounds,
        "key_bits": key["key_bits"], "machine": platform.processor() or platform.machine(),
        "accuracy": {
            "plain_fedmf_test_rmse": mask_only["plain_fedmf_test_rmse"],
            "masked_fedmf_test_rmse": mask_only["test_rmse"],
            "rmse_difference": mask_only["rmse_difference"],
        },
        "leakage": {
            "plain_fedmf": _attack(mask_only, "plain_fedmf_attack"),
            "mask_only": _attack(mask_only),
            "self_audit_plaintext_users": _attack(audit),
            "self_audit_encrypted_fraction": audit["encrypted_fraction"],
            "self_audit_metrics": audit["audit_metrics"],
            "self_audit_exact_only_plaintext_users": _attack(audit_exact),
            "self_audit_exact_only_encrypted_fraction": audit_exact["encrypted_fraction"],
            "self_audit_margin": audit["audit_margin"],
        },
        "self_audit_selective_noise": {
            "command": f"fedmf train --dataset {dataset} --split u1 --rounds {rounds} --mask personalized "
                       f"--mask-noise {SELECTIVE[0]} --mask-scale {SELECTIVE[1][0]} {SELECTIVE[1][1]} "
                       "--selective-noise --refit --policy audit",
            "noise_sigma": SELECTIVE[0], "private_scale": SELECTIVE[1],
            "noisy_users": selective["mask"]["noisy_users"],
            "test_rmse": selective["test_rmse"], "test_rmse_before_refit": selective["test_rmse_before_refit"],
            "plain_fedmf_test_rmse": selective["plain_fedmf_test_rmse"],
            "rmse_difference": selective["rmse_difference"],
            "plain_fedmf_refit_test_rmse": selective["plain_fedmf_refit_test_rmse"],
            "rmse_difference_vs_plain_refit": selective["rmse_difference_vs_plain_refit"],
            "encrypted_fraction": selective["encrypted_fraction"],
            "plaintext_users_attack": _attack(selective),
        },
        "trade_off": curve,
    }
    if not args.skip_cost:
        warm_numba_kernels()  # compile / load time stays out of the first cost run
        encrypted = make_backend("paillier_packed", out_of_range="clip", **key)
        median_fitted = int(np.median(np.bincount(split.train.users, minlength=split.train.n_users)))
        result["cost"] = cost(split, dataset, encrypted, mask_model, cost_users, cost_rounds, repeats,
                              median_fitted)
    if args.plot:
        plot_trade_off(curve, args.plot)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return result


if __name__ == "__main__":
    main()
