"""Benchmark: one Flower app in Flower's simulation engine, three ways (issue 18).

    python bench/flower_secagg.py [--quick] [--json PATH] [--points n:length:dropout,...] [--deploy N]
    python bench/flower_secagg.py --table RUN.json [RUN.json ...]   # the README table

The same clients and vectors, the same dropouts (the first ceil(dropout n) nodes fail
their train step, i.e. after sharing keys, before sending the masked input), run as:

* ``plain``: no secure aggregation (Message API: send the model, sum the replies);
* ``flower``: Flower's ``secaggplus_mod`` + ``SecAggPlusWorkflow`` (legacy
  ``DefaultWorkflow`` + FedAvg, the only way Flower runs it) with our (k, t) as
  ``num_shares = k + 1``, ``reconstruction_threshold = t``, clipping range = our clip,
  ``quantization_range = 2^16`` (our 16 bits); its plain baseline is the same legacy
  app without ``SecAggPlusWorkflow``;
* ``ours``: :func:`secagg.flower.secagg_mod` + :class:`secagg.flower.SecAggWorkflow`.

Measured per run (one round; Ray start and node registration excluded):

* wall seconds of the round, timed in the ServerApp around the workflow call, after
  one untimed query message to every node (it starts Ray's actors and loads the apps;
  ours also loads its numba kernels there, a one-off per process of about 1 s);
  overhead = secure wall - the plain wall of the same engine path;
* client CPU seconds (``time.process_time`` around each node's app, summed over nodes,
  written by a timing mod to files in a temp dir) and server CPU seconds
  (``time.thread_time`` of the ServerApp thread);
* bytes up per client: the serialized size (``deflate`` of the message and its
  children) of each node's replies, mean over nodes;
* exact: ours -- the unmasked integer sum equals the sum of the survivors' quantized
  inputs (the vectors lie on the quantization grid, so quantization is exact); Flower --
  max |result - true mean| at most one quantization step (its sum is not exposed).

``--deploy N`` adds one deployment point (``deployment`` in the JSON): our SecAgg+ on N
SuperNodes and a SuperLink started on 127.0.0.1 by ``scripts/flower_deploy.py``, its
round wall time (timed the same way, in the ServerApp) beside the same round in the
simulation engine.

The host is shared (2 cores, other jobs): the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BITS = 16
LEVEL = 2**(BITS - 1) - 1  #: secagg.quantize's L: levels -L..L, step clip / L
CLIP = LEVEL / 2**BITS  #: step 2^-16: grid values quantize exactly
QUICK = (50, 100_000, 0.1)
GRID = [(50, 100_000, 0.1), (100, 100_000, 0.1), (200, 100_000, 0.1), (100, 1_000_000, 0.1)]


def words_of(partition: int, length: int) -> np.ndarray:
    return np.random.default_rng(partition).integers(0, 2 * LEVEL + 1, length)


def vector_of(partition: int, length: int) -> np.ndarray:
    return (words_of(partition, length) - LEVEL) / 2**BITS


def _size(obj) -> int:
    """Serialized bytes of a Flower message or record, children included."""
    return len(obj.deflate()) + sum(_size(c) for c in (obj.children or {}).values())


def timing_mod(folder: str):
    """Records each node's CPU seconds and bytes up / down in ``folder``."""

    def mod(msg, ctxt, call_next):
        t0 = time.process_time()
        reply = call_next(msg, ctxt)
        cpu = time.process_time() - t0
        up = 0 if reply.has_error() else _size(reply.content)
        with open(os.path.join(folder, f"{ctxt.node_id}.txt"), "a") as fh:
            fh.write(f"{cpu} {up} {_size(msg.content)}\n")
        return reply

    return mod


def _apps(way: str, n: int, length: int, dropped: set[int], folder: str, out: dict):
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    timer = timing_mod(folder)

    def wait_for_nodes(grid):
        """Wait for every node, then warm every node's app with one query (not timed)."""
        deadline = time.monotonic() + 300
        while len(list(grid.get_node_ids())) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        warm = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
                for node in grid.get_node_ids()]
        list(grid.send_and_receive(warm, timeout=300))

    server = ServerApp()
    if way in ("flower", "flower_plain"):
        from flwr.client import NumPyClient
        from flwr.client.mod import secaggplus_mod
        from flwr.common import ndarrays_to_parameters
        from flwr.server import LegacyContext, ServerConfig
        from flwr.server.strategy import FedAvg
        from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

        class BenchClient(NumPyClient):
            def __init__(self, partition):
                self.partition = partition

            def fit(self, parameters, config):
                if self.partition in dropped:
                    raise RuntimeError("dropped")
                return [vector_of(self.partition, length)], 1, {}

        def client_fn(context):
            return BenchClient(int(context.node_config["partition-id"])).to_client()

        client = ClientApp(client_fn=client_fn, mods=[timer] + ([secaggplus_mod] if way == "flower" else []))

        @server.main()
        def main(grid, context):
            wait_for_nodes(grid)
            strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                              min_available_clients=n,
                              initial_parameters=ndarrays_to_parameters([np.zeros(length)]),
                              accept_failures=True)
            legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
            fit = None
            if way == "flower":
                fit = SecAggPlusWorkflow(num_shares=out["k"] + 1, reconstruction_threshold=out["t"],
                                         clipping_range=CLIP, quantization_range=2**BITS, max_weight=1,
                                         timeout=600)
            t0, c0 = time.perf_counter(), time.thread_time()
            DefaultWorkflow(fit_workflow=fit)(grid, legacy)
            out["server_cpu"], out["wall"] = time.thread_time() - c0, time.perf_counter() - t0
            record = legacy.state.array_records["parameters"]
            out["mean"] = next(iter(record.values())).numpy()
        return server, client

    client = ClientApp()

    @client.query()
    def warm_up(msg, context):
        if way == "ours":  # load our numba kernels in this worker process (cache=True) before timing
            from fedmf.warmup import warm_numba_kernels

            warm_numba_kernels()
        return Message(RecordDict(), reply_to=msg)

    def train(msg, context):
        partition = int(context.node_config["partition-id"])
        if partition in dropped:
            raise RuntimeError("dropped")
        return Message(RecordDict({"update": ArrayRecord({"w": Array(vector_of(partition, length))}),
                                   "metrics": MetricRecord({"partition-id": partition})}), reply_to=msg)

    if way == "ours":
        from secagg.flower import SecAggWorkflow, secagg_mod

        client.train(mods=[timer, secagg_mod])(train)

        @server.main()
        def main(grid, context):
            wait_for_nodes(grid)
            workflow = SecAggWorkflow("secagg+", clip=CLIP, precision_bits=BITS, timeout=600, k=out["k"],
                                      t=out["t"])
            t0, c0 = time.perf_counter(), time.thread_time()
            result = workflow(grid, ArrayRecord({"w": Array(np.zeros(length))}))
            out["server_cpu"], out["wall"] = time.thread_time() - c0, time.perf_counter() - t0
            out["words"], out["mean"] = result.words, result.mean()["w"].numpy()
            out["included_partitions"] = sorted(int(m["partition-id"]) for m in result.metrics.values())
        return server, client

    client.train(mods=[timer])(train)

    @server.main()
    def main(grid, context):
        wait_for_nodes(grid)
        model = ArrayRecord({"w": Array(np.zeros(length))})
        t0, c0 = time.perf_counter(), time.thread_time()
        nodes = sorted(grid.get_node_ids())
        messages = [Message(RecordDict({"arrays": model, "config": ConfigRecord()}), dst_node_id=node,
                            message_type=MessageType.TRAIN) for node in nodes]
        total, count = np.zeros(length), 0
        for reply in grid.send_and_receive(messages, timeout=600):
            if not reply.has_error():
                total += reply.content["update"]["w"].numpy()
                count += 1
        out["server_cpu"], out["wall"] = time.thread_time() - c0, time.perf_counter() - t0
        out["mean"] = total / count
    return server, client


def run_way(way: str, n: int, length: int, dropped: set[int], k: int, t: int) -> dict:
    from flwr.simulation import run_simulation

    with tempfile.TemporaryDirectory() as folder:
        out = {"k": k, "t": t}
        server, client = _apps(way, n, length, dropped, folder, out)
        run_simulation(server, client, num_supernodes=n,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": os.cpu_count() or 2,
                                                     "include_dashboard": False}})
        rows = []
        for name in os.listdir(folder):
            if name.endswith(".txt"):
                rows += [tuple(map(float, line.split())) for line in open(os.path.join(folder, name))]
        nodes = len([f for f in os.listdir(folder) if f.endswith(".txt")])
    if "wall" not in out:
        raise RuntimeError(f"{way}: the ServerApp did not finish its round")
    out["client_cpu"] = float(sum(r[0] for r in rows))
    out["bytes_up_per_client"] = float(sum(r[1] for r in rows) / max(nodes, 1))
    out["bytes_down_per_client"] = float(sum(r[2] for r in rows) / max(nodes, 1))
    return out


def run_point(n: int, length: int, dropout: float) -> dict:
    from secagg.masking import find_parameters

    params = find_parameters(n, dropout_rate=dropout)
    k, t = min(params.k, n - 1), params.t
    dropped = set(range(math.ceil(dropout * n)))
    survivors = [p for p in range(n) if p not in dropped]
    true_mean = sum(vector_of(p, length) for p in survivors) / len(survivors)
    runs = {way: run_way(way, n, length, dropped, k, t) for way in ("plain", "ours", "flower_plain", "flower")}
    step = 2 * CLIP / (2**BITS - 1)
    ours, flower = runs["ours"], runs["flower"]
    ours_exact = bool(ours["included_partitions"] == survivors and np.array_equal(
        ours["words"], sum(words_of(p, length) for p in survivors)))
    flower_error = float(np.max(np.abs(flower["mean"] - true_mean)))
    point = {
        "n": n, "length": length, "dropout": dropout, "k": k, "t": t, "dropped": len(dropped),
        "ours_overhead_seconds": ours["wall"] - runs["plain"]["wall"],
        "flower_overhead_seconds": flower["wall"] - runs["flower_plain"]["wall"],
        "exact": ours_exact, "flower_max_abs_error": flower_error,
        "flower_within_one_step": flower_error <= step * (1 + 1e-9),
        "ways": {way: {key: r[key] for key in ("wall", "server_cpu", "client_cpu", "bytes_up_per_client",
                                              "bytes_down_per_client")} for way, r in runs.items()},
    }
    point["overhead_ratio"] = point["ours_overhead_seconds"] / point["flower_overhead_seconds"]
    return point


def deployment_point(n: int, length: int) -> dict:
    """Our SecAgg+ on a deployed federation (a SuperLink and ``n`` SuperNodes on
    127.0.0.1, ``scripts/flower_deploy.py``) beside the same round in the simulation
    engine: the same n, length, (k, t) and one node failing its train step."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("flower_deploy", Path(__file__).resolve().parents[1]
                                                  / "scripts" / "flower_deploy.py")
    deploy_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy_script)
    deployed = deploy_script.deploy(n, length, drop=0)
    k, t = deployed["k"], deployed["t"]
    survivors = list(range(1, n))
    sim = run_way("ours", n, length, {0}, k, t)
    sim_plain = run_way("plain", n, length, {0}, k, t)
    return {
        "n": n, "length": length, "dropped": 1, "k": k, "t": t,
        "deployment_round_seconds": deployed["round_seconds"],
        "deployment_exact": bool(deployed["exact"]),
        "simulation_round_seconds": sim["wall"],
        "simulation_plain_round_seconds": sim_plain["wall"],
        "simulation_exact": bool(sim["included_partitions"] == survivors and np.array_equal(
            sim["words"], sum(words_of(p, length) for p in survivors))),
        "deployment_vs_simulation": deployed["round_seconds"] / sim["wall"],
    }


def markdown_table(results: list[dict]) -> str:
    """The README table of finished runs (each a ``--json`` file's content), one row per point."""
    lines = ["| n | length | dropped | (k, t) | plain wall s | ours wall s | Flower plain wall s | "
             "Flower wall s | ours overhead s | Flower overhead s | ratio | client CPU s ours / Flower | "
             "KiB up ours / Flower | exact | load |",
             "|" + "---|" * 15]
    for result in results:
        for p in result["points"]:
            w = p["ways"]
            lines.append(
                f"| {p['n']} | {p['length']:.0e} | {p['dropped']} | ({p['k']}, {p['t']}) | "
                f"{w['plain']['wall']:.2f} | {w['ours']['wall']:.2f} | {w['flower_plain']['wall']:.2f} | "
                f"{w['flower']['wall']:.2f} | {p['ours_overhead_seconds']:.2f} | "
                f"{p['flower_overhead_seconds']:.2f} | {p['overhead_ratio']:.3f} | "
                f"{w['ours']['client_cpu']:.1f} / {w['flower']['client_cpu']:.1f} | "
                f"{w['ours']['bytes_up_per_client'] / 1024:.0f} / {w['flower']['bytes_up_per_client'] / 1024:.0f} | "
                f"{'yes' if p['exact'] else 'NO'} | {result['host']['loadavg'][0]:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only n=50, length 1e5, 10%% dropout")
    ap.add_argument("--json", help="write results to this path")
    ap.add_argument("--points", help="comma-separated n:length:dropout (default: the issue's grid)")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="print the README table of finished runs and exit")
    ap.add_argument("--deploy", type=int, metavar="N", default=0,
                    help="also measure one deployment point: N SuperNodes on 127.0.0.1 beside the simulation")
    ap.add_argument("--deploy-length", type=int, default=1000, help="vector length of the deployment point")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table([json.loads(Path(path).read_text()) for path in args.table]))
        return 0
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    if args.points:
        grid = [(int(a), int(float(b)), float(c)) for a, b, c in (p.split(":") for p in args.points.split(","))]
    else:
        grid = [QUICK] if args.quick else GRID
    points = []
    home = tempfile.TemporaryDirectory()  # Flower's state of this run only, always removed
    os.environ["FLWR_HOME"] = home.name
    for n, length, dropout in grid:
        point = run_point(n, length, dropout)
        points.append(point)
        print(f"n={n} length={length} dropout={dropout}: ours overhead {point['ours_overhead_seconds']:.2f} s, "
              f"Flower {point['flower_overhead_seconds']:.2f} s, ratio {point['overhead_ratio']:.3f}, "
              f"exact {point['exact']}", flush=True)
    deployment = None
    if args.deploy:
        deployment = deployment_point(args.deploy, args.deploy_length)
        print(f"deployment n={args.deploy}: round {deployment['deployment_round_seconds']:.2f} s deployed, "
              f"{deployment['simulation_round_seconds']:.2f} s in simulation, exact "
              f"{deployment['deployment_exact'] and deployment['simulation_exact']}", flush=True)
    home.cleanup()
    result = {"points": points, **({"deployment": deployment} if deployment else {}),
              **{k: v for k, v in points[0].items() if k != "ways"},
              "host": {"python": sys.version.split()[0], "machine": platform.machine(),
                       "cpus": os.cpu_count(), "loadavg": os.getloadavg()}}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
