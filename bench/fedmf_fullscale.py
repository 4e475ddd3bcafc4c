"""Full-scale encrypted FedMF on MovieLens 100K u1: packed Paillier on all 943 users (issue 19).

Measured in one run, against peers in the same run:

* accuracy: FedMF FullText over ``paillier_packed`` (2048-bit key, ``--workers``
  processes encrypt the clients' uploads) and over ``plain``, same seed and initial
  point; test RMSE after each round and the largest per-round difference;
* time: wall seconds of the encrypted training (setup and rounds, no baseline) and per
  round. When fewer than 60 rounds run, ``estimated_wall_seconds_60_rounds`` is an
  *estimate*: setup + 60 x the measured mean seconds per round;
* PartText vs FullText under packed Paillier: one round on all users each, from the same
  initial point; mean bytes up per client and mean client seconds (device total: local
  update, encryption, and the decryption of the cells it downloads, computed once per
  round by the simulation and charged at its measured cost, see
  :attr:`secagg.RoundCost.shared_client_seconds`), with their ratios part / full.

Client seconds are wall-clock seconds measured where each client's work ran; on a
loaded host they are inflated (the JSON records the load average). So each round's CPU
seconds over this process and its worker processes are recorded too
(``cpu_seconds_per_round``, from /proc), and ``estimated_idle_seconds_per_round`` =
CPU seconds / ``--workers`` is an *estimate* of the round's wall time on that many idle
cores (it assumes the work splits evenly; the main process's serial part is included
in the CPU total).

    python bench/fedmf_fullscale.py [--quick] [--rounds N] [--workers W] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from fedmf.data import load_split
from fedmf.trainer import FedMFTrainer
from fedmf.warmup import warm_numba_kernels
from secagg import make_backend
from secagg.paillier.packing import PackingLayout, aligned_positions, choose_layout

ROUNDS_TARGET = 60
_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of this process and its live child processes, by pid."""
    me = os.getpid()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == me or ppid == me:
            out[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def cpu_since(before: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in tree_cpu().items())


def train(split, backend, mode: str, rounds: int, seed: int, users) -> tuple[FedMFTrainer, float]:
    """Run ``rounds`` FedMF rounds; return the trainer and the wall seconds (setup included)."""
    t0 = time.perf_counter()
    trainer = FedMFTrainer(split, backend, mode=mode, seed=seed, users=users)
    trainer.cpu_seconds = []
    for _ in range(rounds):
        before = tree_cpu()
        log = trainer.run_round()
        trainer.cpu_seconds.append(cpu_since(before))
        print(f"  {backend.name:16s} {mode}: {log.line()}  cpu {trainer.cpu_seconds[-1]:.1f} s", flush=True)
    return trainer, time.perf_counter() - t0


def packed(workers: int, djn_bits: int | None):
    """2048-bit packed Paillier; ``djn_bits``: DJN short-exponent obfuscators of that length
    (an extra assumption, see secagg.paillier.obfuscation) instead of the exact CRT ones."""
    djn = {} if djn_bits is None else {"obfuscation": "djn", "djn_exponent_bits": djn_bits}
    return make_backend("paillier_packed", out_of_range="clip", workers=workers, **djn)


def mode_cost(trainer: FedMFTrainer) -> dict:
    """Round 1's cost of a trainer (both modes start from the same point)."""
    log, rec = trainer.history[0], trainer.engine.history[0]
    return {
        "bytes_up_per_client": log.bytes_up_per_client,
        "bytes_down_per_client": log.bytes_down_per_client,
        "client_seconds": log.client_seconds,
        "shared_client_seconds": log.shared_client_seconds,
        "own_client_seconds": log.client_seconds - log.shared_client_seconds,
        "round_seconds": rec.seconds,
        "round_cpu_seconds": trainer.cpu_seconds[0],
    }


def groups_touched(trainer: FedMFTrainer, layout: PackingLayout) -> dict:
    """PartText's item-aligned groups: how many a user touches on average, of how many."""
    width = trainer.config.row_length
    positions, n_cells = aligned_positions(trainer.n_items * width, width, layout.slots)
    group_of_item = positions[::width] // layout.slots
    items = trainer.split.train.items
    touched = [np.unique(group_of_item[items[trainer.user_rows[u]]]).size for u in trainer.participants()]
    rated = [trainer.user_rows[u].size / trainer.n_items for u in trainer.participants()]
    return {"groups": n_cells, "items_per_group": layout.slots // width,
            "mean_groups_per_user": float(np.mean(touched)),
            "mean_group_fraction": float(np.mean(touched)) / n_cells,
            "mean_rated_fraction": float(np.mean(rated))}


def run(rounds: int, workers: int, seed: int, n_users: int | None = None, djn_bits: int | None = None) -> dict:
    split = load_split("ml-100k", "u1", seed=seed)
    users = None if n_users is None else np.arange(n_users)
    warm_numba_kernels()
    load_before = os.getloadavg()
    print(f"plain, {rounds} rounds", flush=True)
    plain, _ = train(split, make_backend("plain"), "full", rounds, seed, users)
    print(f"paillier_packed (workers={workers}), FullText, {rounds} rounds", flush=True)
    with packed(workers, djn_bits) as backend:
        full, wall = train(split, backend, "full", rounds, seed, users)
    print("paillier_packed, PartText, 1 round", flush=True)
    with packed(workers, djn_bits) as backend:
        part, part_wall = train(split, backend, "part", 1, seed, users)
        layout = choose_layout(clip=backend.clip, precision_bits=backend.precision_bits,
                               max_summands=len(part.participants()), key_bits=backend.key.public_key.bits)
    enc = np.array([h.test_rmse for h in full.history])
    ref = np.array([h.test_rmse for h in plain.history])
    per_round = float(np.mean([h.seconds for h in full.history]))
    cpu_per_round = float(np.mean(full.cpu_seconds))
    costs = {"full": mode_cost(full), "part": mode_cost(part)}
    out = {
        "rounds": rounds,
        "users": len(full.participants()),
        "workers": workers,
        "obfuscation": "crt" if djn_bits is None else f"djn, {djn_bits}-bit exponent",
        "wall_seconds": wall,
        "setup_seconds": full.setup_seconds,
        "seconds_per_round": per_round,
        "test_rmse": float(enc[-1]),
        "plain_test_rmse": float(ref[-1]),
        "max_round_rmse_difference": float(np.max(np.abs(enc - ref))),
        "cpu_seconds_per_round": cpu_per_round,
        "estimated_idle_seconds_per_round": cpu_per_round / workers,
        "rmse_per_round": enc.tolist(),
        "plain_rmse_per_round": ref.tolist(),
        "full_bytes_up_per_client": costs["full"]["bytes_up_per_client"],
        "part_bytes_up_per_client": costs["part"]["bytes_up_per_client"],
        "full_client_seconds": costs["full"]["client_seconds"],
        "part_client_seconds": costs["part"]["client_seconds"],
        "part_vs_full_bytes_up": costs["part"]["bytes_up_per_client"] / costs["full"]["bytes_up_per_client"],
        "part_vs_full_client_seconds": costs["part"]["client_seconds"] / costs["full"]["client_seconds"],
        "cost_round_1": costs,
        "part_groups": groups_touched(part, layout),
        "part_wall_seconds": part_wall,
        "client_seconds_per_round": float(np.mean([h.client_seconds for h in full.history])),
        "shared_client_seconds_per_round": float(np.mean([h.shared_client_seconds for h in full.history])),
        "server_seconds_per_round": float(np.mean([h.server_seconds for h in full.history])),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "nice": os.nice(0),
        "python": platform.python_version(),
    }
    if rounds < ROUNDS_TARGET:
        out["estimated_wall_seconds_60_rounds"] = full.setup_seconds + ROUNDS_TARGET * per_round
        out["estimate_note"] = (f"estimate: setup + {ROUNDS_TARGET} x the mean of {rounds} measured rounds, "
                                "not a measured 60-round run")
    out["estimated_idle_wall_seconds_60_rounds"] = full.setup_seconds + ROUNDS_TARGET * cpu_per_round / workers
    out["idle_estimate_note"] = (f"estimate: setup + {ROUNDS_TARGET} x measured CPU seconds per round / "
                                 f"{workers} workers, i.e. the wall time on {workers} idle cores if the work "
                                 "splits evenly; not measured")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--rounds", type=int, default=ROUNDS_TARGET)
    parser.add_argument("--workers", type=int, default=2, help="processes for client encryption")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, help="first N users only (smoke runs; default all 943)")
    parser.add_argument("--djn-exponent-bits", type=int, metavar="BITS",
                        help="DJN short-exponent obfuscation (extra assumption) instead of exact CRT")
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    out = run(rounds, args.workers, args.seed, args.users, args.djn_exponent_bits)
    keys = ("rounds", "wall_seconds", "seconds_per_round", "test_rmse", "plain_test_rmse",
            "max_round_rmse_difference", "part_bytes_up_per_client", "full_bytes_up_per_client",
            "part_client_seconds", "full_client_seconds", "part_vs_full_bytes_up",
            "part_vs_full_client_seconds", "cpu_seconds_per_round", "estimated_wall_seconds_60_rounds",
            "estimated_idle_wall_seconds_60_rounds")
    for k in keys:
        if k in out:
            print(f"{k:36s} {out[k]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
