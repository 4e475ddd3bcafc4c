"""Per-round overhead of every aggregation backend in FedMF on MovieLens 100K (split u1).

For each backend one FedMF round is run through :class:`fedmf.trainer.FedMFTrainer`
after its setup aggregation (key generation, worker start-up and compilation happen
there and are reported separately as ``setup_seconds``), and its measured cost is compared with the plain
backend on the same users in the same run. The python-paillier (``phe``) value-by-
value baseline, as in the FedMF paper's code, is measured in the same run on a
sample of users: every value of the sampled users' real uploads is encoded and
encrypted with phe, the server adds ciphertexts value by value, and the client
decrypts the aggregate. With ``--quick`` phe is timed on a sample of each upload's
values and its cost extrapolated linearly (phe works value by value); the JSON says
how many values and users were measured.

    python bench/fedmf_overhead.py [--quick] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import phe

from fedmf.data import load_split
from fedmf.model import local_update
from fedmf.trainer import FedMFTrainer
from fedmf.warmup import warm_numba_kernels
from secagg import make_backend


def measure_backend(split, name, options, users, mode, seed=0):
    """Set up (key generation, pools, compilation happen there) and measure one round."""
    backend = make_backend(name, **({"out_of_range": "clip"} | options))  # gradients clipped, counted
    t0 = time.perf_counter()
    trainer = FedMFTrainer(split, backend, mode=mode, users=users, seed=seed)
    setup = time.perf_counter() - t0
    log = trainer.run_round()
    return {
        "backend": name,
        "options": {k: v for k, v in options.items() if k != "key"},
        "users": len(users),
        "mode": mode,
        "setup_seconds": setup,
        "round_seconds": log.seconds,
        "client_seconds_per_client": log.client_seconds,
        "server_seconds": log.server_seconds,
        "bytes_up_per_client": log.bytes_up_per_client,
        "bytes_down_per_client": log.bytes_down_per_client,
        "test_rmse_after_1_round": log.test_rmse,
    }, trainer


def measure_phe(trainer, users, key_bits, values_per_user):
    """phe value by value on the sampled users' real uploads (as the FedMF paper's code)."""
    public, private = phe.generate_paillier_keypair(n_length=key_bits)
    cfg, train = trainer.config, trainer.split.train
    width = cfg.row_length
    enc_per_value, dec_per_value, add_per_value, lengths, measured = [], [], [], [], 0
    for u in users:
        rows = trainer.user_rows[u]
        _, G = local_update(
            cfg, trainer.mu, trainer.U[u], trainer.V, train.items[rows], train.ratings[rows]
        )
        upload = np.zeros((trainer.n_items, width))
        upload[train.items[rows]] = G / trainer.upload_scale
        values = upload.ravel()
        lengths.append(values.size)
        sample = values if values_per_user is None else _sample(values, values_per_user, u)
        t0 = time.perf_counter()
        ciphers = [public.encrypt(float(x), precision=1e-5) for x in sample]
        enc_per_value.append((time.perf_counter() - t0) / sample.size)
        t0 = time.perf_counter()
        summed = [c + c for c in ciphers]
        add_per_value.append((time.perf_counter() - t0) / sample.size)
        t0 = time.perf_counter()
        decoded = np.array([private.decrypt(c) for c in summed])
        dec_per_value.append((time.perf_counter() - t0) / sample.size)
        if not np.allclose(decoded, 2 * sample, atol=1e-5):
            raise AssertionError("phe baseline decrypted a wrong sum")
        measured += sample.size
    length = float(np.mean(lengths))
    enc, dec, add = (float(np.mean(x)) for x in (enc_per_value, dec_per_value, add_per_value))
    n_clients = len(trainer.participants())
    return {
        "users_measured": len(users),
        "values_measured": measured,
        "values_per_upload": length,
        "extrapolated": values_per_user is not None,
        "encrypt_seconds_per_value": enc,
        "decrypt_seconds_per_value": dec,
        "add_seconds_per_value": add,
        "client_seconds_per_client": length * (enc + dec),
        "server_seconds_for_round": length * add * n_clients,
        "bytes_up_per_client": length * _phe_bytes(public),
    }


def _sample(values, k, seed):
    """k values of the upload, half from its non-zero entries (the rated rows)."""
    rng = np.random.default_rng(seed)
    nonzero = np.flatnonzero(values)
    pick = rng.choice(nonzero, min(k // 2, nonzero.size), replace=False)
    rest = rng.choice(values.size, k - pick.size, replace=False)
    return values[np.concatenate([pick, rest])]


def _phe_bytes(public) -> int:
    """Wire size of one phe value: the ciphertext (n^2 bytes) and its exponent."""
    return (public.n.bit_length() * 2 + 7) // 8 + 4


def plot(summary, path):
    """Bar chart of client (per client) and server (whole round) seconds, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["backends"]
    phe_row = summary["phe"]
    names = [f"{r['backend']}\n{r['users']} users" for r in rows] + [
        f"phe\n{summary['backends'][0]['users']} users*"
    ]
    client = [r["client_seconds_per_client"] for r in rows] + [phe_row["client_seconds_per_client"]]
    server = [r["server_seconds"] for r in rows] + [phe_row["server_seconds_for_round"]]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(names))
    ax.bar(x - 0.2, client, 0.4, label="client (per client)")
    ax.bar(x + 0.2, server, 0.4, label="server (whole round)")
    ax.set_yscale("log")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("seconds per round (log)")
    mode = {"full": "FullText", "part": "PartText"}[summary["mode"]]
    ax.set_title(f"FedMF round on ML-100K u1 ({mode}, {summary['key_bits']}-bit keys), measured")
    ax.text(0.99, 0.02, f"* phe measured on {phe_row['users_measured']} users' uploads, "
            "server scaled to the cohort", transform=ax.transAxes, ha="right", fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a sample of users; under 60 s")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write a PNG of time per round per backend")
    parser.add_argument("--mode", choices=("full", "part"), default="full")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--users", type=int, help="users per round (default: all; --quick: 40)")
    parser.add_argument("--phe-users", type=int, help="users sampled for phe (default 2; --quick 1)")
    args = parser.parse_args(argv)

    split = load_split("ml-100k", "u1")
    n_users = args.users or (40 if args.quick else split.train.n_users)
    users = np.arange(n_users)
    small = np.arange(min(n_users, 10 if args.quick else 50))
    workers = os.cpu_count() or 1
    backends = [
        ("plain", {}, users),
        ("paillier_packed", {"key_bits": args.key_bits, "workers": workers}, users),
        ("paillier", {"key_bits": args.key_bits, "workers": workers}, users[:3] if args.quick else users[:10]),
        ("secagg", {}, small),
        ("secagg+", {}, users),
    ]
    results, trainers = [], {}
    warm_numba_kernels()  # compile / load time stays out of every measured round
    for name, options, cohort in backends:
        if args.quick and name == "paillier":
            continue  # one value per ciphertext: minutes per client even on a sample
        print(f"measuring {name} on {len(cohort)} users ...", flush=True)
        row, trainer = measure_backend(split, name, options, cohort, args.mode)
        results.append(row)
        trainers[name] = trainer
        print(json.dumps(row), flush=True)
    plain = {r["users"]: r for r in results if r["backend"] == "plain"}
    for r in results:
        base = plain.get(r["users"])
        if base is not None:
            r["client_overhead_seconds"] = r["client_seconds_per_client"] - base["client_seconds_per_client"]
            r["server_overhead_seconds"] = r["server_seconds"] - base["server_seconds"]

    phe_users = users[: (args.phe_users or (1 if args.quick else 2))]
    print(f"measuring phe value by value on {len(phe_users)} user(s) ...", flush=True)
    phe_row = measure_phe(trainers["plain"], phe_users, args.key_bits, 100 if args.quick else None)
    packed = next(r for r in results if r["backend"] == "paillier_packed")
    summary = {
        "dataset": "ml-100k",
        "split": "u1",
        "mode": args.mode,
        "key_bits": args.key_bits,
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "backends": results,
        "phe": phe_row,
        "packed_overhead_seconds_per_client": packed["client_overhead_seconds"],
        "packed_server_seconds": packed["server_seconds"],
        "packed_vs_phe_speedup": phe_row["client_seconds_per_client"] / packed["client_seconds_per_client"],
        "packed_vs_phe_server_speedup": phe_row["server_seconds_for_round"] / packed["server_seconds"],
        "packed_vs_phe_bytes_ratio": packed["bytes_up_per_client"] / phe_row["bytes_up_per_client"],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "backends"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    if args.plot:
        plot(summary, args.plot)
    return summary


if __name__ == "__main__":
    main()
