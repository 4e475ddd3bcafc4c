"""The ClientApp: one SuperNode runs the device side of a group of clients.

A node with ``partition-id`` p of ``num-partitions`` P holds the trainer's eligible
clients ``np.array_split(clients, P)[p]`` (users; PersonalFR: its client groups) and
builds the trainer from the run settings the server sends (:data:`records.RUN`); its
clients' private state lives in ``Context.state`` as records (:mod:`.records`), never
in the process. Messages:

* ``query``: reply with the node's client ids (public) and, under ``paillier_packed``,
  the public half of its key;
* ``train.setup`` (FedMF) / ``train.fit``: the clients' uploads, summed over the node's
  chosen clients and divided by the model's upload scale, go to the backend: through
  our SecAgg / SecAgg+ mod (``secagg``, ``secagg+``) or a split backend's device half
  (``plain``, ``paillier_packed``; the latter then decrypts the aggregate and applies the
  update rule to the node's copy of the shared model); the state the round produced is
  kept as pending;
* ``evaluate``: commit the pending state of the clients the server included, then
  reply with the sums of the test metrics over the node's users.
"""

from __future__ import annotations

import copy

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from secagg.backend import PlainDevice
from secagg.flower import secagg_mod
from secagg.flower.records import ARRAYS, TRAIN_CONFIG
from secagg.flower.split_round import SPLIT, answer_split
from secagg.paillier.halves import PackedPaillierDevice
from secagg.paillier.serialization import public_key_to_bytes

from ..errors import ConfigError
from .keys import node_key
from .models import FlowerModel, build_model, settings
from .records import (PENDING, PENDING_ROUND, PRIVATE, ROUND_KEYS, RUN, SHARED, STREAMS, from_record,
                      to_record)

app = ClientApp()

#: one built trainer per process and run settings, and a pristine copy (initial state)
_CACHE: dict[tuple, tuple[FlowerModel, FlowerModel]] = {}


def _models(cfg: dict) -> tuple[FlowerModel, FlowerModel]:
    key = tuple(sorted((k, str(v)) for k, v in cfg.items()))
    if key not in _CACHE:
        _CACHE.clear()
        model = build_model(cfg)
        _CACHE[key] = (model, copy.deepcopy(model))
    return _CACHE[key]


class _Node:
    """One message's view of this node: settings, model, own clients, state."""

    def __init__(self, msg: Message, ctx: Context) -> None:
        records = msg.content.config_records
        record = records.get(RUN) or records.get(TRAIN_CONFIG)
        if record is None:
            raise ConfigError("fedmf node: the message carries no run settings")
        self.msg, self.ctx = msg, ctx
        self.cfg = settings({k: v for k, v in record.items() if k not in ROUND_KEYS})
        self.round = int(record.get("round", 0))
        self.chosen = set(int(c) for c in record.get("chosen", []))
        self.included = set(int(c) for c in record.get("included", []))
        self.model, self.pristine = _models(self.cfg)
        p, n = int(ctx.node_config["partition-id"]), int(ctx.node_config["num-partitions"])
        self.mine = [int(c) for c in np.array_split(np.asarray(self.model.clients(), dtype=np.int64), n)[p]]
        self.paillier = self.cfg["backend"] == "paillier_packed"

    # -- state in Context.state

    def load(self) -> None:
        """The shared model (message, else the node's copy, else the initial one), the
        committed private state and the random streams of the node's clients."""
        arrays = self.msg.content.array_records
        shared = arrays.get(SHARED) or (arrays.get(ARRAYS) if len(arrays.get(ARRAYS, {})) else None)
        shared = shared or self.ctx.state.array_records.get(SHARED)
        self.model.load_shared(from_record(shared) if shared is not None else self.pristine.shared())
        private = self.ctx.state.array_records.get(PRIVATE)
        self.model.load_private(self.mine, from_record(private) if private is not None
                                else self.pristine.private(self.mine))
        streams = self.ctx.state.config_records.get(STREAMS)
        self.model.load_streams(self.mine, dict(streams) if streams is not None
                                else self.pristine.streams(self.mine))

    def keep_shared(self) -> None:
        self.ctx.state[SHARED] = to_record(self.model.shared())

    def commit(self) -> None:
        """Pending state of the included clients becomes their private state (server_step's commit)."""
        meta = self.ctx.state.config_records.get(PENDING_ROUND)
        if meta is None or int(meta["round"]) != self.round:
            return
        trained = [int(c) for c in meta["clients"]]
        dropped = [c for c in trained if c not in self.included]
        kept = self.model.private(dropped)
        self.model.load_private(trained, from_record(self.ctx.state.array_records[PENDING]))
        self.model.load_private(dropped, kept)
        self.ctx.state[PRIVATE] = to_record(self.model.private(self.mine))
        del self.ctx.state.config_records[PENDING_ROUND]

    # -- the device work

    def upload(self, action: str) -> tuple[np.ndarray, RecordDict]:
        """The node's upload (sum over its chosen clients / scale) and its metrics."""
        self.load()
        if action == "setup":
            vec = sum(self.model.setup_vector(c) for c in self.mine)
            return vec, RecordDict({"metrics": MetricRecord({"clients": len(self.mine)})})
        clients = [c for c in self.mine if c in self.chosen]
        vectors = self.model.train(self.round, clients)
        self.ctx.state[PENDING] = to_record(self.model.pending(clients))
        self.ctx.state[PENDING_ROUND] = ConfigRecord({"round": self.round, "clients": clients})
        self.ctx.state[STREAMS] = ConfigRecord(self.model.streams(self.mine))
        vec = sum(vectors[c] for c in clients) / self.model.scale
        return vec, RecordDict({"metrics": MetricRecord({"clients": len(clients)})})

    def device(self, client_id: int):
        if self.paillier:
            clip = float(self.msg.content.config_records[RUN]["clip"])
            return PackedPaillierDevice(node_key(self.ctx.node_config), client_id, clip=clip)
        return PlainDevice(client_id)

    def apply_download(self, action: str, device) -> RecordDict:
        """paillier_packed: apply the decrypted aggregate to the node's copy of the shared model."""
        aggregate = getattr(device, "aggregate", None)
        if aggregate is None:
            return RecordDict()
        self.load()
        if action == "setup":
            self.model.apply_setup(aggregate)
        else:
            self.model.apply_aggregate(self.round, aggregate * self.model.scale, sorted(self.included))
        self.keep_shared()
        return RecordDict()


def _train(action: str, msg: Message, ctx: Context) -> Message:
    node = _Node(msg, ctx)
    if SPLIT in msg.content.config_records:
        return answer_split(msg, node.device, lambda: node.upload(action),
                            lambda device: node.apply_download(action, device))
    vec, content = node.upload(action)  # called by the secagg mod at its masked-input stage
    content["upload"] = to_record({"x": vec})
    return Message(content, reply_to=msg)


@app.train("setup", mods=[secagg_mod])
def setup(msg: Message, context: Context) -> Message:
    return _train("setup", msg, context)


@app.train("fit", mods=[secagg_mod])
def fit(msg: Message, context: Context) -> Message:
    return _train("fit", msg, context)


@app.query()
def clients(msg: Message, context: Context) -> Message:
    node = _Node(msg, context)
    record = {"clients": node.mine}
    if node.paillier:
        record["public-key"] = public_key_to_bytes(node_key(context.node_config).public_key)
    return Message(RecordDict({"node": ConfigRecord(record)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    node = _Node(msg, context)
    node.load()
    node.commit()
    sums = node.model.metric_sums(node.mine)
    return Message(RecordDict({"metrics": MetricRecord(sums)}), reply_to=msg)
