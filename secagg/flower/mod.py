"""The client mod: a SecAgg / SecAgg+ device on a Flower SuperNode.

For a ``train`` message (any ``train.<action>``) whose content holds our
``ConfigRecord`` (records.RECORD) the mod runs one protocol step:

1. ``setup`` starts a fresh device (a new round; an old state is discarded) with the
   protocol id and encoding the server sent; any other stage needs the state left by
   the stage before it (records.NEXT_STAGE), else ProtocolError;
2. at ``masked-input`` (the only stage that needs the vector) it calls the wrapped
   ClientApp (``call_next``), flattens the single ``ArrayRecord`` of its reply, checks
   it against the range policy and masks it (weighted rounds: times its integer weight,
   the reply's metric named by the server's ``weight-key``, sent masked as one more word); the reply keeps the inner metrics and
   config records but never the plaintext arrays;
3. it freezes the device to bytes in ``Context.state`` and replies with the protocol
   bytes.

Any exception (a wrong stage, a malformed message, an input out of range, a failing
train function) propagates: Flower turns it into an error reply, which the workflow
counts as a dropout. Other messages pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from ..errors import InvalidInputError, ProtocolError
from ..masking.halves import MaskingDevice
from .records import NEXT_STAGE, RECORD, STATE, flatten


def make_secagg_mod(*, corrupt_rate: float = 0.05, allow_insecure_threshold: bool = False) -> Callable:
    """A mod whose devices hold these client-side settings (the server cannot lower them)."""

    def mod(msg: Message, ctxt: Context, call_next) -> Message:
        if (msg.metadata.message_type.split(".")[0] != MessageType.TRAIN
                or RECORD not in msg.content.config_records):
            return call_next(msg, ctxt)
        request = msg.content.config_records[RECORD]
        stage, payload = request.get("stage"), request.get("payload")
        if not isinstance(stage, str) or not isinstance(payload, bytes):
            raise ProtocolError("secagg mod: the request needs a str 'stage' and bytes 'payload'")
        device = _device_for(stage, request, ctxt, corrupt_rate, allow_insecure_threshold)
        weight_key = str(request.get("weight-key", "")) if stage == "setup" else \
            str(ctxt.state.config_records[STATE].get("weight-key", ""))
        content = RecordDict()
        if device.needs_input(payload):
            inner = call_next(msg, ctxt)
            if inner.has_error():
                return inner
            if device.max_weight:
                device.set_weight(_metric(inner.content, weight_key))
            content = _strip_arrays(inner.content, device)
        reply = device.handle(payload)
        ctxt.state.config_records[STATE] = ConfigRecord({"next": NEXT_STAGE[stage], "weight-key": weight_key,
                                                         "device": device.to_bytes()})
        content.config_records[RECORD] = ConfigRecord({"stage": stage, "payload": bytes(reply)})
        return Message(content, reply_to=msg)

    return mod


#: the mod with the default client settings
secagg_mod = make_secagg_mod()


def _device_for(stage: str, request: ConfigRecord, ctxt: Context, corrupt_rate: float,
                allow_insecure: bool) -> MaskingDevice:
    if stage not in NEXT_STAGE:
        raise ProtocolError(f"secagg mod: unknown stage {stage!r}; stages are {list(NEXT_STAGE)}")
    if stage == "setup":
        ctxt.state.config_records.pop(STATE, None)
        try:
            return MaskingDevice(int(request["client-id"]), clip=float(request["clip"]),
                                 precision_bits=int(request["precision-bits"]),
                                 out_of_range=str(request["out-of-range"]),
                                 max_weight=int(request.get("max-weight", 0)), corrupt_rate=corrupt_rate,
                                 allow_insecure_threshold=allow_insecure)
        except KeyError as exc:
            raise ProtocolError(f"secagg mod: the setup request lacks {exc.args[0]!r}") from None
    state = ctxt.state.config_records.get(STATE)
    if state is None:
        raise ProtocolError(f"secagg mod: stage {stage!r} arrived before setup (no protocol state)")
    if state["next"] != stage:
        raise ProtocolError(f"secagg mod: stage {stage!r} arrived where {state['next']!r} was expected")
    return MaskingDevice.from_bytes(state["device"])


def _metric(content: RecordDict, key: str):
    """The value of metric ``key`` in the train reply (the node's weight)."""
    for record in content.metric_records.values():
        if key in record:
            return record[key]
    raise InvalidInputError(f"secagg mod: weighted round, but the train reply has no metric {key!r}")


def _strip_arrays(inner: RecordDict, device: MaskingDevice) -> RecordDict:
    """Set the inner reply's one ArrayRecord as the device input; keep everything else."""
    arrays = list(inner.array_records.values())
    if len(arrays) != 1:
        raise InvalidInputError(
            f"secagg mod: the train function must reply with exactly one ArrayRecord, got {len(arrays)}"
        )
    device.set_input(flatten(arrays[0]))
    out = RecordDict()
    for key, record in inner.metric_records.items():
        out[key] = record
    for key, record in inner.config_records.items():
        if key != RECORD:
            out[key] = record
    return out
