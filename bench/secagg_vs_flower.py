"""Benchmark: our SecAgg+ (secagg.masking) against Flower's SecAgg+ in the same run.

    python bench/secagg_vs_flower.py [--quick] [--json PATH] [--points n:len:drop,...]

For every grid point (n clients, vector length, dropout rate) both protocols get the
same (k, t) -- ours from the automatic finder (5% corrupt, the point's dropout rate,
2^-40 / 2^-20), Flower's as ``num_shares = k + 1`` (it counts the client itself; k is
even so num_shares is odd, which flwr 1.41 needs) and ``reconstruction_threshold = t``
-- the same clipping range (8.0) and quantization (2^22 levels), and the same clients
drop at the same stage (after sharing keys, before sending the masked input).

How Flower is driven: its own client mod (``secaggplus_mod``) and its own server
workflow (``SecAggPlusWorkflow``, stages called in order on a ``LegacyContext``) run
in this process; a small in-process ``Grid`` hands each message to the destination
node's mod (one ``Context`` per node) and returns the replies, or an error reply for
a dropped node. Flower's Ray-based simulation engine is not used: on this 2-core host
it cannot hold the grid's 100-500 simulated clients within reason, and the in-process
grid measures exactly the protocol compute (Ray scheduling would only add noise).

What is measured, for both (CPU seconds, ``time.process_time``: the host is shared):

* client seconds: time inside the protocol handlers of each client, minus the time of
  the "training" callback that returns the update (Flower's ``call_next``); includes
  quantization and masking; mean over clients;
* server seconds: time of the server workflow outside client calls;
* overheads: secure minus a plain round in the same engine -- this is what the speedups
  use (``*_speedup``; the ``*_speedup_raw`` ratios of the secure times are reported too).
  Flower's plain round: a client's FitRes (its ``ndarrays_to_parameters``), the server's
  FedAvg of the deserialized updates. Ours: a client serializes its float64 update, the
  server sums the float vectors. A plain client's time is the median over clients (the
  first encodings of a run pay for fresh memory pages). The plain baseline is the
  fastest of three plain rounds after every secure run, and of all runs of the point:
  a plain round allocates every update afresh and swings with page faults (Flower's
  plain FedAvg of 100 x 10^6 values was once slower than its secure round);
* bytes up per client: Flower = protobuf size of the client's reply messages
  (``message_to_proto``); ours = length of our serialized messages;
* repeats: each protocol runs ``--repeats`` times, alternating, and the fastest run of
  each is kept (the host is shared; every run's times are in the JSON);
* exact: our unmasked sum equals the modular sum of the survivors' quantized inputs bit
  for bit. Flower's result is compared with the float mean (max abs error reported);
* active row (``ours_active``, skip with ``--no-active``): our active-adversary variant
  (Ed25519-signed keys, consistency round, t with 2t - k > c_k from
  ``find_parameters(..., active=True)``) at the same point, same data and dropouts. Flower
  has no active variant, so its ratios are against Flower's semi-honest SecAgg+
  (``active_*_speedup``) and against our own semi-honest run (``active_*_cost``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time

import numpy as np

from secagg.masking import find_parameters, make_config, run_round, vectors
from secagg.masking.primitives import prg_cipher, word_dtype
from secagg.masking.quantize import Quantizer, dequantize, modulus_for

CLIP = 8.0
BITS = 22  # Flower's default quantization_range 2^22
CORRUPT = 0.05
#: CPU time of this process (all threads): the host is shared with other jobs, and
#: wall time would charge their load to whichever protocol happened to be running.
CLOCK = time.process_time


PLAIN_REPEATS = 3  #: plain rounds after each secure run; the fastest is the baseline


def _fastest_plain(plain_round) -> tuple[float, float]:
    """(client seconds, server seconds) of the fastest of PLAIN_REPEATS plain rounds; a
    round's client time is the median over its clients (first encodings of a run pay
    for fresh memory pages)."""
    rounds = [plain_round() for _ in range(PLAIN_REPEATS)]
    return min(float(np.median(c)) for c, _ in rounds), min(s for _, s in rounds)


# ------------------------------------------------------------------------------ ours
def run_ours(xs: dict[int, np.ndarray], dropped: set[int], k: int, t: int, active: bool = False) -> dict:
    clients = sorted(xs)
    n, length = len(clients), xs[clients[0]].size
    modulus = modulus_for(n, BITS)
    # each client quantizes its own float vector while masking it (chunk by chunk);
    # the rounding keys are fixed here only so that the exactness check can re-derive
    # the quantized inputs after the round (untimed)
    quantizers = {c: Quantizer(CLIP, BITS, rounding_key=os.urandom(32)) for c in clients}
    config = make_config(clients, length, modulus, k=k, t=t, active=active, corrupt_rate=CORRUPT)
    t0 = CLOCK()
    res = run_round(xs, config, quantizers=quantizers, dropouts={"masked_input": dropped}, clock=CLOCK,
                    corrupt_rate=CORRUPT)
    wall = CLOCK() - t0
    expected = np.zeros(length, dtype=np.uint64)
    for c in res.included:
        expected += quantizers[c].encode(xs[c], modulus)
    expected %= np.uint64(modulus)
    exact = bool(np.array_equal(expected, res.aggregate.astype(np.uint64)))
    mean = dequantize(res.aggregate, CLIP, BITS, len(res.included)) / len(res.included)
    alive = [c for c in clients if c not in dropped]
    client = [res.client_seconds[c] for c in alive]
    # a plain round in the same engine: each client serializes its float update (the
    # least any transport does), the server sums the survivors' float vectors
    def plain_round():
        plain_client = []
        for c in alive:
            t0 = CLOCK()
            np.asarray(xs[c], dtype="<f8").tobytes()
            plain_client.append(CLOCK() - t0)
        t0 = CLOCK()
        total = np.zeros(length)
        for c in alive:
            total += xs[c]
        return plain_client, CLOCK() - t0

    plain_client, plain_server = _fastest_plain(plain_round)
    return {
        "client_seconds": float(np.mean(client)),
        "client_seconds_max": float(np.max(client)),
        "server_seconds": res.server_seconds,
        "plain_server_seconds": plain_server,
        "plain_client_seconds": plain_client,
        "server_overhead": res.server_seconds - plain_server,
        "client_overhead": float(np.mean(client)) - plain_client,
        "bytes_up_per_client": float(np.mean([res.bytes_up[c] for c in alive])),
        "modulus_bits": modulus.bit_length() - 1,
        "wall_seconds": wall,
        "exact": exact,
        "max_abs_error_vs_float_mean": float(np.max(np.abs(mean - _float_mean(xs, res.included)))),
    }


def _float_mean(xs, included):
    return np.mean([np.clip(xs[c], -CLIP, CLIP) for c in included], axis=0)


# ------------------------------------------------------------------------------ Flower
def run_flower(xs: dict[int, np.ndarray], dropped: set[int], k: int, t: int) -> dict:
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.app.error import Error
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

    from flwr.supercore.task_identity import TaskIdentity

    logging.getLogger("flwr").setLevel(logging.ERROR)
    # the identity a ServerApp process would have (Flower's runtime sets it)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    nodes = {c + 1: xs[c] for c in xs}  # Flower node ids start at 1
    dead = {c + 1 for c in dropped}
    length = next(iter(xs.values())).size
    node_ctx = {nid: Context(0, nid, {}, RecordDict(), {}) for nid in nodes}
    client_sec = {nid: 0.0 for nid in nodes}
    bytes_up = {nid: 0 for nid in nodes}
    train_sec = [0.0]

    def train(nid):
        def call_next(msg, ctxt):
            t0 = CLOCK()
            fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([nodes[nid]]), 1, {})
            out = Message(compat.fitres_to_recorddict(fitres, True), reply_to=msg)
            train_sec[0] += CLOCK() - t0
            return out
        return call_next

    class Grid:
        seconds = 0.0

        def send_and_receive(self, messages, timeout=None):
            t_grid = CLOCK()
            replies = []
            for msg in messages:
                nid = msg.metadata.dst_node_id
                stage = msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]
                if nid in dead and stage in (Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK):
                    replies.append(Message(Error(0, "dropped"), reply_to=msg))
                    continue
                # the transport: each node receives its own deserialized copy
                msg = message_from_proto(message_to_proto(msg))
                train_sec[0] = 0.0
                t0 = CLOCK()
                reply = secaggplus_mod(msg, node_ctx[nid], train(nid))
                client_sec[nid] += CLOCK() - t0 - train_sec[0]
                proto = message_to_proto(reply)
                bytes_up[nid] += proto.ByteSize()
                replies.append(message_from_proto(proto))
            self.seconds += CLOCK() - t_grid
            return replies

    class Proxy:
        def __init__(self, nid):
            self.node_id = nid

    zeros = ndarrays_to_parameters([np.zeros(length)])

    class Strategy:
        def configure_fit(self, server_round, parameters, client_manager):
            return [(Proxy(nid), FitIns(zeros, {})) for nid in nodes]

        def aggregate_fit(self, server_round, results, failures):
            return results[0][1].parameters, {}

    ctx = LegacyContext(Context(0, 0, {}, RecordDict(), {}), strategy=Strategy())
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(zeros, True)
    wf = SecAggPlusWorkflow(num_shares=k + 1, reconstruction_threshold=t, max_weight=1.0,
                            clipping_range=CLIP, quantization_range=1 << BITS)
    grid, state = Grid(), WorkflowState()
    t0 = CLOCK()
    ok = all(step(grid, ctx, state) for step in (wf.setup_stage, wf.share_keys_stage,
                                                  wf.collect_masked_vectors_stage, wf.unmask_stage))
    total = CLOCK() - t0
    server = total - grid.seconds
    out = {"completed": bool(ok)}
    if ok:
        agg = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
            ctx.state.array_records[MAIN_PARAMS_RECORD], True))[0]
        included = [c for c in xs if c not in dropped]
        out["max_abs_error_vs_float_mean"] = float(np.max(np.abs(agg - _float_mean(xs, included))))
    # plain round in the same engine: FitIns out, FitRes back, FedAvg-style average
    from flwr.server.strategy.aggregate import aggregate as fedavg_aggregate

    def plain_round():
        plain_client, results = [], []
        for nid in nodes:
            if nid in dead:
                continue
            c0 = CLOCK()
            fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([nodes[nid]]), 1, {})
            results.append(compat.fitres_to_recorddict(fitres, True))
            plain_client.append(CLOCK() - c0)
        s0 = CLOCK()
        fedavg_aggregate([(parameters_to_ndarrays(compat.recorddict_to_fitres(r, True).parameters), 1)
                          for r in results])
        return plain_client, CLOCK() - s0

    plain_client, plain_server = _fastest_plain(plain_round)
    alive = [nid for nid in nodes if nid not in dead]
    out.update({
        "client_seconds": float(np.mean([client_sec[nid] for nid in alive])),
        "client_seconds_max": float(np.max([client_sec[nid] for nid in alive])),
        "server_seconds": server,
        "plain_server_seconds": plain_server,
        "plain_client_seconds": plain_client,
        "server_overhead": server - plain_server,
        "client_overhead": float(np.mean([client_sec[nid] for nid in alive])) - plain_client,
        "bytes_up_per_client": float(np.mean([bytes_up[nid] for nid in alive])),
        "wall_seconds": total,
    })
    return out


# ------------------------------------------------------------------------------ main
def warm_up(ns) -> None:
    """One tiny round of each, and our width-specialised unpacking kernel compiled for
    every grid modulus, so JIT compilation and imports are not timed."""
    xs = {c: np.linspace(-1, 1, 64) for c in range(6)}
    run_ours(xs, {0}, 4, 2)
    run_flower(xs, {0}, 4, 2)
    for n in ns:
        modulus = modulus_for(n, BITS)
        words = np.zeros(64, dtype=word_dtype(modulus))
        vectors.unpack(vectors.pack(words, modulus), 64, modulus, words.dtype)


def _best(runs: list[dict]) -> dict:
    """The run with the smallest client + server time; all runs' times are kept."""
    best = dict(min(runs, key=lambda r: r.get("client_seconds", 0) + r.get("server_seconds", 0)))
    best["all_client_seconds"] = [r.get("client_seconds") for r in runs]
    best["all_server_seconds"] = [r.get("server_seconds") for r in runs]
    if "plain_server_seconds" in best:  # the fastest plain baseline of all runs
        for side in ("client", "server"):
            plain = min(r[f"plain_{side}_seconds"] for r in runs)
            best[f"all_plain_{side}_seconds"] = [r[f"plain_{side}_seconds"] for r in runs]
            best[f"plain_{side}_seconds"] = plain
            best[f"{side}_overhead"] = best[f"{side}_seconds"] - plain
    best["exact"] = all(r.get("exact", True) for r in runs)
    best["completed"] = all(r.get("completed", True) for r in runs)
    return best


def bench_point(n: int, length: int, drop: float, seed: int = 0, repeats: int = 1,
                active: bool = True) -> dict:
    rng = np.random.default_rng(seed)  # test data only
    xs = {c: rng.normal(0.0, 1.0, length) for c in range(n)}
    dropped = set(rng.choice(n, size=int(round(drop * n)), replace=False).tolist())
    params = find_parameters(n, dropout_rate=max(drop, 0.01), corrupt_rate=CORRUPT)
    k, t = params.k, params.t
    ours_runs, flower_runs = [], []
    for _ in range(repeats):  # alternate, so load changes on the shared host hit both alike
        ours_runs.append(run_ours(xs, dropped, k, t))
        flower_runs.append(run_flower(xs, dropped, k, t))
    ours, flower = _best(ours_runs), _best(flower_runs)
    row = {"n": n, "length": length, "dropout": drop, "dropped": len(dropped), "k": k, "t": t,
           "complete_graph": params.complete, "repeats": repeats, "ours": ours, "flower": flower}
    if flower.get("completed"):
        row["server_speedup"] = flower["server_overhead"] / ours["server_overhead"]
        row["client_speedup"] = flower["client_overhead"] / ours["client_overhead"]
        row["server_speedup_raw"] = flower["server_seconds"] / ours["server_seconds"]
        row["client_speedup_raw"] = flower["client_seconds"] / ours["client_seconds"]
        row["bytes_ratio"] = ours["bytes_up_per_client"] / flower["bytes_up_per_client"]
    row["exact"] = ours["exact"]
    if active:
        row["ours_active"] = _active_run(xs, dropped, n, drop, repeats)
        act = row["ours_active"]
        for side in ("client", "server"):
            row[f"active_{side}_cost"] = act[f"{side}_overhead"] / ours[f"{side}_overhead"]
            if flower.get("completed"):
                row[f"active_{side}_speedup"] = flower[f"{side}_overhead"] / act[f"{side}_overhead"]
        row["exact"] = row["exact"] and act["exact"]
    return row


def _active_run(xs, dropped, n, drop, repeats) -> dict:
    """Our active variant at one point, with the (k, t) its finder picks (best of ``repeats``)."""
    params = find_parameters(n, dropout_rate=max(drop, 0.01), corrupt_rate=CORRUPT, active=True)
    best = _best([run_ours(xs, dropped, params.k, params.t, active=True) for _ in range(repeats)])
    best.update(k=params.k, t=params.t, corrupt_neighbours=params.corrupt_neighbours,
                tolerated_dropout_rate=params.tolerated_dropout_rate)
    return best


def paper_point() -> dict:
    """n = 500, length 1e5, 10% dropout: our server time vs Bonawitz et al. 2017 (~62 s).

    The paper's figure is for the complete graph (SecAgg), so both our complete-graph
    SecAgg and our SecAgg+ are run.
    """
    n, length, drop = 500, 100_000, 0.1
    rng = np.random.default_rng(1)
    xs = {c: rng.normal(0.0, 1.0, length) for c in range(n)}
    dropped = set(rng.choice(n, size=int(drop * n), replace=False).tolist())
    plus = find_parameters(n, dropout_rate=drop, corrupt_rate=CORRUPT)
    out = {"n": n, "length": length, "dropout": drop, "paper_server_seconds": 62.0}
    for name, (k, t) in (("secagg_complete", (n - 1, n // 2 + 1)), ("secagg_plus", (plus.k, plus.t))):
        r = run_ours(xs, dropped, k, t)
        out[name] = {"k": k, "t": t, "server_seconds": r["server_seconds"],
                     "client_seconds": r["client_seconds"], "exact": r["exact"]}
    return out


def prg_throughput(nbytes: int = 4 << 20, chunk: int = 1 << 17, repeats: int = 9) -> dict:
    """Keystream GB/s (CPU time, best of ``repeats``) of our mask PRG and of plain CTR mode.

    Ours is AES-256-CTR run on OpenSSL's AES-GCM engine (primitives.prg_cipher); the CTR
    rows are ``modes.CTR`` at AES-256 and AES-128, read the same way in ``chunk`` pieces.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    engines = {
        "ours_aes256_gcm_engine": lambda: prg_cipher(os.urandom(32)),
        "ctr_aes256": lambda: Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor(),
        "ctr_aes128": lambda: Cipher(algorithms.AES(os.urandom(16)), modes.CTR(bytes(16))).encryptor(),
    }
    zeros, out = bytes(chunk), bytearray(chunk + 16)
    result = {}
    for name, make in engines.items():
        best = float("inf")
        for _ in range(repeats):
            t0 = CLOCK()
            enc = make()
            for _ in range(nbytes // chunk):
                enc.update_into(zeros, out)
            best = min(best, CLOCK() - t0)
        result[f"{name}_gbps"] = nbytes / best / 1e9
    result["ours_vs_ctr_aes256"] = result["ours_aes256_gcm_engine_gbps"] / result["ctr_aes256_gbps"]
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n=100, length 1e5, 10%% dropout (< 60 s)")
    ap.add_argument("--json", help="write results to this path")
    ap.add_argument("--points", help="comma-separated n:length:dropout points (default: the full grid)")
    ap.add_argument("--no-paper", action="store_true", help="skip the n=500 paper comparison")
    ap.add_argument("--repeats", type=int, help="runs per point and protocol, best kept "
                    "(default 2 with --quick, else 1)")
    ap.add_argument("--no-active", action="store_true", help="skip the active-variant row of each point")
    ap.add_argument("--table", metavar="JSON", help="print the README table of a finished run's JSON and exit")
    args = ap.parse_args(argv)
    if args.table:
        with open(args.table) as fh:
            print(markdown_table(json.load(fh)))
        return 0
    if args.quick:
        points = [(100, 100_000, 0.1)]
    elif args.points:
        points = [(int(a), int(float(b)), float(c)) for a, b, c in (p.split(":") for p in args.points.split(","))]
    else:
        points = [(n, m, d) for n in (100, 500) for m in (100_000, 1_000_000) for d in (0.0, 0.1, 0.3)]
    warm_up({n for n, _, _ in points})
    rows: list[dict] = []
    result: dict = {}
    for n, m, d in points:
        row = bench_point(n, m, d, repeats=args.repeats or (2 if args.quick else 1),
                          active=not args.no_active)
        rows.append(row)
        print(f"n={n} len={m} drop={d:.0%} k={row['k']} t={row['t']}: "
              f"client ours {row['ours']['client_seconds']:.4f}s flower {row['flower']['client_seconds']:.4f}s | "
              f"server ours {row['ours']['server_seconds']:.3f}s flower {row['flower']['server_seconds']:.3f}s | "
              f"bytes ours {row['ours']['bytes_up_per_client']:.0f} flower {row['flower']['bytes_up_per_client']:.0f} | "
              f"exact {row['exact']}", flush=True)
        if "ours_active" in row:
            a = row["ours_active"]
            print(f"  active k={a['k']} t={a['t']}: client {a['client_seconds']:.4f}s server "
                  f"{a['server_seconds']:.3f}s bytes {a['bytes_up_per_client']:.0f} | cost vs ours "
                  f"client {row['active_client_cost']:.2f}x server {row['active_server_cost']:.2f}x | "
                  f"vs Flower client {row.get('active_client_speedup', float('nan')):.1f}x "
                  f"server {row.get('active_server_speedup', float('nan')):.1f}x", flush=True)
        result = summarise(rows)
        if args.json:  # written after every point, so a long grid leaves partial results
            _write(args.json, result)
    if not args.quick and not args.no_paper:
        result["paper_comparison"] = paper_point()
        pc = result["paper_comparison"]
        print(f"paper point n=500 len=1e5 10%: complete {pc['secagg_complete']['server_seconds']:.2f}s, "
              f"SecAgg+ {pc['secagg_plus']['server_seconds']:.2f}s (paper ~62 s)")
    result["prg"] = prg_throughput()
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1, default=str))
    if args.json:
        _write(args.json, result)
    return 0


def summarise(rows: list[dict]) -> dict:
    """Headline figures (the first grid point) plus the worst case over all points."""
    head = rows[0]
    return {
        "server_speedup": head.get("server_speedup"),
        "client_speedup": head.get("client_speedup"),
        "bytes_ratio": head.get("bytes_ratio"),
        "exact": all(r["exact"] for r in rows),
        "min_server_speedup": min(r.get("server_speedup", float("nan")) for r in rows),
        "min_client_speedup": min(r.get("client_speedup", float("nan")) for r in rows),
        "min_server_speedup_raw": min(r.get("server_speedup_raw", float("nan")) for r in rows),
        "min_client_speedup_raw": min(r.get("client_speedup_raw", float("nan")) for r in rows),
        "max_bytes_ratio": max(r.get("bytes_ratio", float("nan")) for r in rows),
        "rows": rows,
        "engine": "in-process: Flower's secaggplus_mod + SecAggPlusWorkflow stages over an in-process Grid",
        "clock": "time.process_time (CPU seconds of the benchmark process, all threads)",
        "host": {"python": sys.version.split()[0], "machine": platform.machine(),
                 "flwr": _flwr_version()},
    }


def markdown_table(result: dict) -> str:
    """The README's results table (one row a grid point) and its summary, from the JSON."""
    head = ("| n | length | dropout | (k, t) | ours client ms | Flower client ms | ours server s "
            "| Flower server s | client speedup | server speedup | client raw | server raw "
            "| bytes ratio | exact |")
    lines = [head, "|" + "---:|" * 3 + "---|" + "---:|" * 9 + "---|"]
    for r in result["rows"]:
        o, f = r["ours"], r["flower"]
        lines.append(
            f"| {r['n']} | {r['length']:.0e} | {r['dropout']:.0%} | ({r['k']}, {r['t']}) "
            f"| {1e3 * o['client_seconds']:.1f} | {1e3 * f['client_seconds']:.1f} "
            f"| {o['server_seconds']:.3f} | {f['server_seconds']:.2f} "
            f"| {r['client_speedup']:.1f} | {r['server_speedup']:.1f} "
            f"| {r['client_speedup_raw']:.1f} | {r['server_speedup_raw']:.1f} "
            f"| {r['bytes_ratio']:.3f} | {r['exact']} |")
    rows = result["rows"]
    lines += _active_table(rows)
    lines += ["", f"Summary over the grid: server speedup from {result['min_server_speedup']:.1f}x to "
              f"{max(r['server_speedup'] for r in rows):.0f}x, client speedup from "
              f"{result['min_client_speedup']:.1f}x to {max(r['client_speedup'] for r in rows):.0f}x, "
              f"bytes ratio at most {result['max_bytes_ratio']:.3f}, every run exact: {result['exact']}."]
    if "prg" in result:
        g = result["prg"]
        lines.append(f"Mask PRG: {g['ours_aes256_gcm_engine_gbps']:.1f} GB/s (AES-256 on the GCM engine) against "
                     f"{g['ctr_aes256_gbps']:.1f} GB/s for `modes.CTR` AES-256 and "
                     f"{g['ctr_aes128_gbps']:.1f} GB/s for AES-128.")
    if "paper_comparison" in result:
        pc = result["paper_comparison"]
        plus, full = pc["secagg_plus"], pc["secagg_complete"]
        lines.append(f"Paper point (n = 500, length 1e5, 10 % dropout; paper about {pc['paper_server_seconds']:.0f} s): "
                     f"ours {plus['server_seconds']:.2f} s with SecAgg+ (k = {plus['k']}, t = {plus['t']}) and "
                     f"{full['server_seconds']:.2f} s on the complete graph (k = {full['k']}, t = {full['t']}).")
    return "\n".join(lines)


def _active_table(rows: list[dict]) -> list[str]:
    """Rows of our active variant, for the runs that measured it (none in older JSON)."""
    active = [r for r in rows if "ours_active" in r]
    if not active:
        return []
    lines = ["", "| n | length | dropout | active (k, t) | tolerated dropout | ours active client ms "
             "| ours active server s | client cost vs ours | server cost vs ours "
             "| client speedup vs Flower | server speedup vs Flower | exact |",
             "|" + "---:|" * 3 + "---|" + "---:|" * 7 + "---|"]
    for r in active:
        a = r["ours_active"]
        lines.append(
            f"| {r['n']} | {r['length']:.0e} | {r['dropout']:.0%} | ({a['k']}, {a['t']}) "
            f"| {a['tolerated_dropout_rate']:.0%} | {1e3 * a['client_seconds']:.1f} | {a['server_seconds']:.3f} "
            f"| {r['active_client_cost']:.2f} | {r['active_server_cost']:.2f} "
            f"| {r.get('active_client_speedup', float('nan')):.1f} "
            f"| {r.get('active_server_speedup', float('nan')):.1f} | {a['exact']} |")
    return lines


def _flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")


def _write(path: str, result: dict) -> None:
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1, default=str)


if __name__ == "__main__":
    raise SystemExit(main())
