"""The ServerApp: the shared model, the round schedule, the backend's server side.

:func:`run` (``@app.main()`` calls it with the run config) does what
:class:`fedmf.engine.Engine` does, over a Flower ``Grid``:

0. wait for ``num-nodes`` nodes (0: whatever is connected), ask each for its client ids
   (and, under ``paillier_packed``, the public key; all nodes must send the same one);
   FedMF first aggregates its public statistics (mu, n_j) through the backend;
1. choose the round's participants from ``default_rng(seed)`` as the engine does
   (:func:`fedmf.engine.choose_participants`);
2. run one aggregation of the nodes holding participants: ``secagg`` / ``secagg+``
   through :class:`secagg.flower.SecAggWorkflow`, ``plain`` / ``paillier_packed``
   through their split halves (:func:`secagg.flower.split_round.run_split_round`); a
   node's upload is the sum over its chosen clients divided by the upload scale, so
   the backend's range (``clip``) is the largest number of clients on one node;
3. apply the aggregate with the trainer's server step (``paillier_packed``: the server
   only multiplies ciphertexts; each node decrypts and applies the step to its copy);
4. ``evaluate`` on every node (it commits the state of its included clients) and
   combine the metric sums.

The returned summary has the per-round metrics, participants, dropouts and seconds.
The server builds the trainer from the same settings for the shapes, the client list
and the seeded initial model; its steps use only aggregates.
"""

from __future__ import annotations

import json
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from secagg.backend import PlainServer
from secagg.flower import SecAggWorkflow
from secagg.flower.records import flatten
from secagg.flower.split_round import run_split_round
from secagg.paillier.halves import PackedPaillierServer
from secagg.paillier.serialization import public_key_from_bytes

from ..engine import choose_participants
from ..errors import ConfigError
from .models import FlowerModel, build_model, combine, settings
from .records import RUN, SHARED, run_record, to_record

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    summary, _ = run(grid, context.run_config)
    print("FEDMF-FLOWER " + json.dumps({k: v for k, v in summary.items() if k != "history"}), flush=True)
    path = str(context.run_config.get("result-path", ""))
    if path:
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=1)


def run(grid, run_config, *, wait_seconds: float = 120.0) -> tuple[dict, FlowerModel]:
    """Train ``rounds`` rounds; return the summary and the server's model (shared state)."""
    cfg = settings(run_config)
    model = build_model(cfg)
    t_start = time.perf_counter()
    server = _Server(grid, cfg, model)
    server.discover(wait_seconds)
    if model.has_setup:
        aggregate, _ = server.aggregate("setup", 0, server.node_clients, [], model.trainer.n_items + 2)
        if aggregate is not None:
            model.apply_setup(aggregate)
    rng = np.random.default_rng(int(cfg["seed"]))
    history = []
    for rnd in range(1, int(cfg["rounds"]) + 1):
        t0 = time.perf_counter()
        chosen = choose_participants(model.clients(), model.participation, rng)
        holders = {n: cs for n, cs in server.node_clients.items() if set(cs) & set(chosen)}
        length = model.trainer.upload_layout().length
        aggregate, included_nodes = server.aggregate("fit", rnd, holders, chosen, length)
        included = sorted(c for n in included_nodes for c in server.node_clients[n] if c in set(chosen))
        if aggregate is not None:
            model.apply_aggregate(rnd, aggregate * model.scale, included)
        metrics = server.evaluate(rnd, included)
        history.append({"round": rnd, **metrics, "participants": len(included),
                        "dropouts": server.last_dropouts, "seconds": time.perf_counter() - t0})
    summary = {"model": cfg["model"], "backend": cfg["backend"], "rounds": int(cfg["rounds"]),
               "nodes": len(server.node_clients), "clients": len(model.clients()),
               **{k: v for k, v in history[-1].items() if k not in ("round", "dropouts")},
               "seconds": time.perf_counter() - t_start, "history": history}
    return summary, model


class _Server:
    """The server's side of one run over ``grid``."""

    def __init__(self, grid, cfg: dict, model: FlowerModel) -> None:
        self.grid, self.cfg, self.model = grid, cfg, model
        self.timeout = float(cfg["timeout"])
        self.node_clients: dict[int, list[int]] = {}
        self.public_key = None
        self.last_dropouts: dict[str, int] = {}

    def record(self, **round_keys) -> ConfigRecord:
        return ConfigRecord({**run_record(self.cfg), **round_keys})

    def send(self, message_type: str, contents: dict[int, RecordDict]) -> dict[int, Message]:
        messages = [Message(c, dst_node_id=n, message_type=message_type) for n, c in contents.items()]
        return {m.metadata.src_node_id: m for m in self.grid.send_and_receive(messages, timeout=self.timeout)}

    def discover(self, wait_seconds: float) -> None:
        """Wait for the nodes; learn each one's clients (and the clients' public key)."""
        want, deadline = int(self.cfg["num-nodes"]), time.monotonic() + wait_seconds
        nodes = list(self.grid.get_node_ids())
        while (not nodes or len(nodes) < want) and time.monotonic() < deadline:
            time.sleep(0.2)
            nodes = list(self.grid.get_node_ids())
        # one query per node, waited for long enough for slow starts (a second query could
        # run beside the next message on another actor and overwrite the node's Context.state)
        messages = [Message(RecordDict({RUN: self.record()}), dst_node_id=n, message_type=MessageType.QUERY)
                    for n in nodes]
        wait = max(deadline - time.monotonic(), self.timeout)
        replies = {m.metadata.src_node_id: m for m in self.grid.send_and_receive(messages, timeout=wait)}
        keys = set()
        for node in nodes:
            reply = replies.get(node)
            if reply is None or reply.has_error():
                raise ConfigError(f"node {node} did not report its clients: "
                                  f"{reply.error.reason if reply is not None else 'no reply'}")
            record = reply.content.config_records["node"]
            self.node_clients[node] = [int(c) for c in record.get("clients", [])]
            if "public-key" in record:
                keys.add(bytes(record["public-key"]))
        held = sorted(c for cs in self.node_clients.values() for c in cs)
        if held != sorted(self.model.clients()):
            raise ConfigError(f"the nodes hold {len(held)} client ids, the model has {len(self.model.clients())}: "
                              "num-partitions must equal the number of nodes")
        self.node_clients = {n: cs for n, cs in self.node_clients.items() if cs}
        if self.cfg["backend"] == "paillier_packed":
            if len(keys) != 1:
                raise ConfigError(f"the nodes sent {len(keys)} different Paillier public keys; they must share one")
            small = bool(self.cfg.get("paillier-allow-small-key", False))
            self.public_key = public_key_from_bytes(keys.pop(), allow_insecure_small_key=small)

    def aggregate(self, action: str, rnd: int, holders: dict[int, list[int]], chosen: list[int],
                  length: int) -> tuple[np.ndarray | None, list[int]]:
        """One aggregation of the nodes ``holders``: (the sum of their uploads or None, included nodes)."""
        nodes = sorted(holders)
        clip = float(max(len([c for c in holders[n] if action == "setup" or c in set(chosen)]) for n in nodes))
        record = self.record(round=rnd, chosen=list(chosen) or [-1], clip=clip)
        shared = to_record(self.model.shared()) if action == "fit" and self.cfg["backend"] != "paillier_packed" \
            else ArrayRecord()
        backend, bits = self.cfg["backend"], int(self.cfg["precision-bits"])
        if backend in ("secagg", "secagg+"):
            workflow = SecAggWorkflow(backend, clip=clip, precision_bits=bits, timeout=self.timeout, action=action)
            out = workflow(self.grid, shared, train_config=record, node_ids=nodes, round_id=rnd,
                           upload=to_record({"x": np.zeros(length)}))
            self.last_dropouts = {stage: len(d) for stage, d in out.dropouts.items()}
            return flatten(out.arrays), out.included
        pid = {i: n for i, n in enumerate(nodes)}
        if backend == "plain":
            half = PlainServer(list(pid), length, min_inputs=1)  # the server sees uploads in clear anyway
        else:
            half = PackedPaillierServer(self.public_key, list(pid), length, clip=clip, precision_bits=bits)

        def extra(stage: str, node: int) -> RecordDict:
            if stage == "download":  # the nodes apply the aggregate: they need who is in it
                inc = sorted(c for p in half.received for c in holders[pid[p]] if c in set(chosen))
                return RecordDict({RUN: self.record(round=rnd, included=inc or [-1], clip=clip)})
            return RecordDict({RUN: record, SHARED: shared})

        out = run_split_round(self.grid, half, pid, message_type=f"{MessageType.TRAIN}.{action}",
                              timeout=self.timeout, round_id=rnd, extra=extra)
        self.last_dropouts = {stage: len(d) for stage, d in out.dropouts.items()}
        return out.result.aggregate, [pid[p] for p in out.result.included]

    def evaluate(self, rnd: int, included: list[int]) -> dict[str, float]:
        """Every node commits its included clients' state and sends its metric sums."""
        content = {RUN: self.record(round=rnd, included=included or [-1])}
        if self.cfg["backend"] != "paillier_packed":
            content[SHARED] = to_record(self.model.shared())
        replies = self.send(MessageType.EVALUATE, {n: RecordDict(dict(content)) for n in self.node_clients})
        sums: dict[str, float] = {}
        for node in self.node_clients:
            reply = replies.get(node)
            if reply is None or reply.has_error():
                raise ConfigError(f"node {node} failed to evaluate round {rnd}: "
                                  f"{reply.error.reason if reply is not None else 'no reply'}")
            for record in reply.content.metric_records.values():
                for key, value in record.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
        return combine(sums)
