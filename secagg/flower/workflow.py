"""The server workflow: one SecAgg / SecAgg+ round over a Flower ``Grid``.

``SecAggWorkflow(...)(grid, arrays)`` sends the model ``arrays`` to the nodes through
the four stages of :mod:`secagg.masking` (setup, share-keys, masked-input, unmask),
each one ``grid.send_and_receive(..., timeout=timeout)``. A node that does not reply
in time, replies with an error, or whose reply fails the server's checks is a dropout
from that stage on (``FlowerRound.dropouts`` names the stage and the reason). The
backend's MaskingServer recovers the dropouts' masks, so the sum is exact for the
survivors; a round that falls below the threshold t or ``min_inputs`` raises
(RoundAbortedError / TooFewInputsError, naming the stage and the dropouts) and
reveals nothing. (k, t) come from the backend's finder, the encoding from its
``clip`` / ``precision_bits`` / ``out_of_range``; weights are 1 (the sum; the mean is
``sum / total_weight``) unless ``max_weight`` is set (FedAvg by example counts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from ..backend import make_backend
from ..errors import InvalidInputError, ProtocolError, SecaggError
from ..masking.backend import MaskingBackend
from ..masking.halves import MaskingServer
from .records import ARRAYS, RECORD, STAGES, TRAIN_CONFIG, flatten, layout, unflatten


@dataclass
class FlowerRound:
    """The outcome of one round: the sum as arrays, who is in it, who dropped and why."""

    arrays: ArrayRecord  #: sum of the survivors' arrays (float64, the model's shapes)
    total_weight: float  #: number of survivors (unit weights) or the sum of their weights
    included: list[int]  #: node ids whose update is in the sum
    dropouts: dict[str, dict[int, str]] = field(default_factory=dict)  #: stage -> node -> reason
    metrics: dict[int, MetricRecord] = field(default_factory=dict)  #: the train replies' metrics
    words: np.ndarray | None = None  #: the exact integer sum of the quantized inputs
    info: dict = field(default_factory=dict)  #: (k, t), modulus, encoding

    def mean(self) -> ArrayRecord:
        """The survivors' mean, per array."""
        return ArrayRecord({k: type(a)(a.numpy() / self.total_weight) for k, a in self.arrays.items()})


class SecAggWorkflow:
    """Our SecAgg (``backend="secagg"``) or SecAgg+ (``"secagg+"``) as a Flower server step.

    ``backend`` is a masking backend name with its options (``clip``,
    ``precision_bits``, ``dropout_rate``, ``k``/``t``, ``min_inputs``...) or an instance;
    ``timeout`` is the seconds each stage waits for replies; ``action`` routes the
    messages to ``@app.train(action)`` (message type ``train.<action>``). ``max_weight``
    > 0 weights each node by its train reply's integer metric ``weight_key`` (at most
    ``max_weight``, else the node drops): the sum is sum_i w_i x_i and the total weight
    travels masked with it (the modulus covers every node at ``max_weight``).
    """

    def __init__(self, backend: str | MaskingBackend = "secagg+", *, timeout: float | None = 60.0,
                 action: str | None = None, max_weight: int = 0, weight_key: str = "num-examples",
                 **options) -> None:
        self.backend = make_backend(backend, **options)
        if not isinstance(self.backend, MaskingBackend):
            raise InvalidInputError(f"SecAggWorkflow runs the masking backends, not {self.backend.name!r}")
        if self.backend.active:
            raise InvalidInputError("the active variant needs a PKI of the nodes: not available over Flower yet")
        if isinstance(max_weight, bool) or not isinstance(max_weight, int) or max_weight < 0:
            raise InvalidInputError(f"max_weight must be an integer >= 0, got {max_weight!r}")
        self.max_weight, self.weight_key = max_weight, str(weight_key)
        self.timeout = timeout
        self.message_type = MessageType.TRAIN + (f".{action}" if action else "")

    def __call__(self, grid, arrays: ArrayRecord, *, train_config: ConfigRecord | None = None,
                 node_ids: Iterable[int] | None = None, round_id: int = 0,
                 upload: ArrayRecord | None = None) -> FlowerRound:
        """One round; ``upload`` is a template of the nodes' upload when it differs from the
        model ``arrays`` sent to them (its shapes shape the result; default: ``arrays``)."""
        nodes = sorted(int(n) for n in (grid.get_node_ids() if node_ids is None else node_ids))
        template = arrays if upload is None else upload
        shapes, length = layout(template), flatten(template).size
        if length < 1:
            raise InvalidInputError("SecAggWorkflow: the model has no entries")
        pid = {node: i for i, node in enumerate(nodes)}  # protocol ids fit 32 bits, node ids may not
        plan = self.backend.plan(list(pid.values()), length, max_weight=self.max_weight)
        server = self.backend.server_half(list(pid.values()), length, plan=plan)
        run = _Run(pid, server)
        outbox = server.start()
        while outbox:
            stage = STAGES[server.stage]
            messages = [self._message(stage, node, pid[node], outbox[pid[node]], server, arrays,
                                      train_config, round_id) for node in nodes if pid[node] in outbox]
            asked = {m.metadata.dst_node_id for m in messages}
            for reply in grid.send_and_receive(messages, timeout=self.timeout):
                run.absorb(stage, reply, asked)
            run.drop_silent(stage, asked)
            try:
                outbox = server.advance()
            except SecaggError as exc:
                raise type(exc)(f"secure aggregation round {round_id} refused after stage {stage!r} "
                                f"(dropouts so far: {run.dropouts}): {exc}") from exc
        result = server.result()
        node_of = {p: node for node, p in pid.items()}
        return FlowerRound(unflatten(result.aggregate, shapes), result.total_weight,
                           [node_of[p] for p in result.included], run.dropouts, run.metrics,
                           result.words, result.info)

    def _message(self, stage, node, client_id, payload, server: MaskingServer, arrays, train_config,
                 round_id) -> Message:
        record = {"stage": stage, "payload": payload}
        if stage == "setup":
            record.update({"client-id": client_id,
                           "clip": float(server.plan.clip), "precision-bits": int(server.plan.bits),
                           "out-of-range": self.backend.out_of_range, "max-weight": self.max_weight,
                           "weight-key": self.weight_key})
        content = RecordDict({RECORD: ConfigRecord(record)})
        if stage == "masked-input":
            content[ARRAYS] = arrays
            content[TRAIN_CONFIG] = train_config or ConfigRecord()
        return Message(content, dst_node_id=node, message_type=self.message_type, group_id=str(round_id))


class _Run:
    """Book-keeping of one round: which node answered which stage, and why others dropped."""

    def __init__(self, pid: dict[int, int], server: MaskingServer) -> None:
        self.pid, self.server = pid, server
        self.answered: set[int] = set()
        self.dropouts: dict[str, dict[int, str]] = {}
        self.metrics: dict[int, MetricRecord] = {}

    def drop(self, stage: str, node: int, reason: str) -> None:
        self.dropouts.setdefault(stage, {})[node] = reason

    def absorb(self, stage: str, reply: Message, asked: set[int]) -> None:
        node = reply.metadata.src_node_id
        if node not in asked or node in self.answered:
            return  # not ours to count (a stray or repeated reply)
        self.answered.add(node)
        if reply.has_error():
            self.drop(stage, node, f"error reply: {reply.error.reason}")
            return
        try:
            record = reply.content.config_records.get(RECORD)
            if record is None or record.get("stage") != stage or not isinstance(record.get("payload"), bytes):
                raise ProtocolError(f"reply without a {stage!r} payload")
            self.server.receive(self.pid[node], record["payload"])
        except SecaggError as exc:
            self.drop(stage, node, f"rejected reply: {exc}")
            return
        if stage == "masked-input":
            for record in reply.content.metric_records.values():
                self.metrics[node] = record

    def drop_silent(self, stage: str, asked: set[int]) -> None:
        for node in sorted(asked - self.answered):
            self.drop(stage, node, "no reply before the timeout")
        self.answered = set()
