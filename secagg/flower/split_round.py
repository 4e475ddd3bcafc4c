"""Any split backend (:mod:`secagg.split`) over a Flower ``Grid``: one round, stage by stage.

For the backends whose halves are stateless between messages on the device (``plain``,
``paillier_packed``) the server side is :func:`run_split_round` and the node side
:func:`answer_split` (the masking backends keep protocol state per node: they use the
mod and :class:`~secagg.flower.SecAggWorkflow`). Each stage of the
:class:`~secagg.split.ServerHalf` is one ``grid.send_and_receive``: a message per
client carries the ConfigRecord :data:`SPLIT` (``stage``, ``payload`` bytes) plus what
the caller adds (``extra(stage, node)``: the model, the train config). A node answers
with its device half's reply bytes (``reply`` False when the half sends nothing back,
as a packed-Paillier client after decrypting the aggregate). A node that fails, times
out or whose reply the server half rejects is a dropout from that stage on; a round
the server half refuses (too few inputs) raises, naming the stage and the dropouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from ..errors import ProtocolError, SecaggError
from ..split import DeviceHalf, ServerHalf, SplitResult

SPLIT = "split"


@dataclass
class SplitFlowerRound:
    """The server half's result, who dropped where and why, and the nodes' reply metrics."""

    result: SplitResult
    dropouts: dict[str, dict[int, str]] = field(default_factory=dict)
    metrics: dict[int, MetricRecord] = field(default_factory=dict)


def run_split_round(grid, server: ServerHalf, nodes: dict[int, int], *, message_type: str,
                    timeout: float | None = 60.0, round_id: int = 0,
                    extra: Callable[[str, int], RecordDict] | None = None) -> SplitFlowerRound:
    """Drive ``server`` over ``grid``; ``nodes`` maps each protocol client id to its node id."""
    dropouts: dict[str, dict[int, str]] = {}
    metrics: dict[int, MetricRecord] = {}
    pid_of = {node: pid for pid, node in nodes.items()}
    outbox = server.start()
    while outbox:
        stage = server.stage
        messages = []
        for pid, payload in sorted(outbox.items()):
            content = extra(stage, nodes[pid]) if extra is not None else RecordDict()
            content[SPLIT] = ConfigRecord({"stage": stage, "payload": bytes(payload), "client-id": pid})
            messages.append(Message(content, dst_node_id=nodes[pid], message_type=message_type,
                                    group_id=str(round_id)))
        asked, answered = {m.metadata.dst_node_id for m in messages}, set()
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node = reply.metadata.src_node_id
            if node not in asked or node in answered:
                continue
            answered.add(node)
            reason = _absorb(server, pid_of[node], stage, reply)
            if reason:
                dropouts.setdefault(stage, {})[node] = reason
            else:
                for record in reply.content.metric_records.values():
                    metrics[node] = record
        for node in sorted(asked - answered):
            dropouts.setdefault(stage, {})[node] = "no reply before the timeout"
        try:
            outbox = server.advance()
        except SecaggError as exc:
            raise type(exc)(f"round {round_id} refused after stage {stage!r} (dropouts so far: "
                            f"{dropouts}): {exc}") from exc
    return SplitFlowerRound(server.result(), dropouts, metrics)


def _absorb(server: ServerHalf, pid: int, stage: str, reply: Message) -> str:
    """Give one reply to the server half; the reason it is a dropout, or '' if absorbed."""
    if reply.has_error():
        return f"error reply: {reply.error.reason}"
    record = reply.content.config_records.get(SPLIT)
    if record is None or record.get("stage") != stage or not isinstance(record.get("payload"), bytes):
        return f"rejected reply: no {stage!r} payload"
    if not record.get("reply", True):
        return ""
    try:
        server.receive(pid, record["payload"])
    except SecaggError as exc:
        return f"rejected reply: {exc}"
    return ""


def answer_split(msg: Message, device_for: Callable[[int], DeviceHalf],
                 make_input: Callable[[], tuple[np.ndarray, RecordDict]],
                 after: Callable[[DeviceHalf], RecordDict] | None = None) -> Message:
    """The node side of one stage: ``device_for(client id)`` answers the server's bytes.

    When the message is the one that consumes the input, ``make_input()`` gives the
    vector and the records to send beside the reply (metrics; never the plaintext
    vector). ``after(device)`` (optional) runs once the device handled the message and
    gives records to add (a node applying a decrypted aggregate).
    """
    record = msg.content.config_records.get(SPLIT)
    if record is None or not isinstance(record.get("payload"), bytes):
        raise ProtocolError("split round: the message has no 'split' record with bytes 'payload'")
    device = device_for(int(record["client-id"]))
    payload = record["payload"]
    content = RecordDict()
    if device.needs_input(payload):
        x, content = make_input()
        device.set_input(x)
    reply = device.handle(payload)
    if after is not None:
        for key, value in after(device).items():
            content[key] = value
    content[SPLIT] = ConfigRecord({"stage": str(record["stage"]), "reply": reply is not None,
                                   "payload": b"" if reply is None else bytes(reply)})
    return Message(content, reply_to=msg)
