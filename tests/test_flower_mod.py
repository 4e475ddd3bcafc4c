"""secagg.flower: the client mod and the server workflow on hand-built Flower messages.

A local grid runs each node's ClientApp function (``make_ffn(train, [secagg_mod])``, as
Flower's own mod tests do) with its own Context, and can make a node silent, answer
with an error, or send garbage at any stage: each is a dropout, the sum stays exact.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install 'fedmf-toolkit[flower]')")

from flwr.app import (Array, ArrayRecord, ConfigRecord, Context, Error, Message, Metadata,  # noqa: E402
                      MetricRecord, RecordDict)
from flwr.client.mod import make_ffn  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from secagg.errors import (InvalidInputError, ProtocolError, RoundAbortedError,  # noqa: E402
                           TooFewInputsError)
from secagg.flower import RECORD, STATE, SecAggWorkflow, secagg_mod  # noqa: E402

GRID_CLIP = (2**15 - 1) / 2**16  #: quantization step 2^-16: grid values quantize exactly
FIRST_NODE = 2**40  #: Flower node ids are 64-bit; protocol ids are 32-bit


@pytest.fixture(autouse=True)
def server_task(monkeypatch):
    """The identity a ServerApp process has (instruction messages need it)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _words(node: int, size: int = 10) -> np.ndarray:
    return np.random.default_rng(node % 1000).integers(0, 2**16 - 1, size)


def _train(msg: Message, ctxt: Context) -> Message:
    """A node's train function: its grid vector, as a (2, 3) and a (4,) array."""
    x = (_words(ctxt.node_id) - (2**15 - 1)) / 2**16
    content = RecordDict({"update": ArrayRecord({"a": Array(x[:6].reshape(2, 3)), "b": Array(x[6:])}),
                          "metrics": MetricRecord({"num-examples": 1})})
    return Message(content, reply_to=msg)


class LocalGrid:
    """In-process nodes; ``faults[(node, stage)]`` is "silent", "error" or "garbage"."""

    def __init__(self, n: int, faults=None, train=_train):
        self.contexts = {FIRST_NODE + i: Context(run_id=1, node_id=FIRST_NODE + i, node_config={},
                                                 state=RecordDict(), run_config={}) for i in range(n)}
        self.faults = faults or {}
        self.app = make_ffn(train, [secagg_mod])
        self.stages: list[str] = []

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            stage = msg.content.config_records[RECORD]["stage"]
            self.stages.append(stage)
            fault = self.faults.get((node, stage))
            if fault == "silent":
                continue
            try:
                reply = self.app(msg, self.contexts[node])
            except Exception as exc:  # what a ClientApp turns into an error reply
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            if fault == "error":
                reply = Message(Error(code=0, reason="node crashed"), reply_to=msg)
            elif fault == "garbage":
                reply.content.config_records[RECORD]["payload"] = b"SA\x03\x02" + bytes(50)
            replies.append(reply)
        return replies


def _model() -> ArrayRecord:
    return ArrayRecord({"a": Array(np.zeros((2, 3))), "b": Array(np.zeros(4))})


def _workflow(**options) -> SecAggWorkflow:
    return SecAggWorkflow("secagg+", clip=GRID_CLIP, precision_bits=16, timeout=5.0, **options)


def test_round_is_exact_and_arrays_keep_their_shapes():
    grid = LocalGrid(5)
    result = _workflow()(grid, _model())
    assert result.included == sorted(grid.contexts) and not result.dropouts
    np.testing.assert_array_equal(result.words, sum(_words(n) for n in grid.contexts))
    expected = sum((_words(n) - (2**15 - 1)) / 2**16 for n in grid.contexts)
    np.testing.assert_allclose(result.arrays["a"].numpy(), expected[:6].reshape(2, 3), atol=1e-12)
    assert result.arrays["b"].numpy().shape == (4,)
    assert grid.stages == ["setup"] * 5 + ["share-keys"] * 5 + ["masked-input"] * 5 + ["unmask"] * 5
    assert set(result.metrics) == set(grid.contexts)


@pytest.mark.parametrize("stage", ["setup", "share-keys", "masked-input", "unmask"])
@pytest.mark.parametrize("fault", ["silent", "error", "garbage"])
def test_a_dropout_at_any_stage_leaves_the_survivors_sum_exact(stage, fault):
    gone = FIRST_NODE + 2
    grid = LocalGrid(5, {(gone, stage): fault})
    result = _workflow()(grid, _model())
    assert gone in result.dropouts[stage]
    survivors = [n for n in grid.contexts if stage == "unmask" or n != gone]
    assert result.included == survivors
    np.testing.assert_array_equal(result.words, sum(_words(n) for n in survivors))


def test_below_threshold_the_round_is_refused_not_skipped():
    faults = {(FIRST_NODE + i, "masked-input"): "silent" for i in range(3)}
    with pytest.raises((RoundAbortedError, TooFewInputsError), match="refused after stage 'masked-input'"):
        _workflow()(LocalGrid(5, faults), _model())


def test_min_inputs_guard_refuses_before_unmasking():
    grid = LocalGrid(5, {(FIRST_NODE, "masked-input"): "error"})
    with pytest.raises(TooFewInputsError):
        _workflow(min_inputs=5)(grid, _model())
    assert "unmask" not in grid.stages


def test_an_input_out_of_range_is_a_dropout():
    def loud(msg, ctxt):
        reply = _train(msg, ctxt)
        if ctxt.node_id == FIRST_NODE + 1:
            reply.content["update"]["b"] = Array(np.full(4, 3.0))
        return reply

    result = _workflow()(LocalGrid(5, train=loud), _model())
    assert "outside" in result.dropouts["masked-input"][FIRST_NODE + 1]
    assert FIRST_NODE + 1 not in result.included


def _hand_built(stage: str, payload: bytes = b"", node: int = 7, **extra) -> Message:
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=node, reply_to_message_id="",
                    group_id="0", created_at=0.0, ttl=60.0, message_type="train")
    record = ConfigRecord({"stage": stage, "payload": payload, **extra})
    return Message(RecordDict({RECORD: record}), metadata=meta)


def _context(node: int = 7) -> Context:
    return Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})


def test_mod_refuses_a_stage_out_of_order():
    app = make_ffn(_train, [secagg_mod])
    with pytest.raises(ProtocolError, match="before setup"):
        app(_hand_built("share-keys", b"x"), _context())


def test_mod_state_is_bytes_and_a_stage_skip_is_refused():
    from secagg import make_backend

    backend = make_backend("secagg", clip=1.0, precision_bits=8)
    server = backend.server_half([0, 1, 2], 10)
    config = server.start()[0]
    ctxt = _context()
    app = make_ffn(_train, [secagg_mod])
    reply = app(_hand_built("setup", config, **{"client-id": 0, "clip": 1.0, "precision-bits": 8,
                                                "out-of-range": "raise"}), ctxt)
    server.receive(0, reply.content.config_records[RECORD]["payload"])
    state = ctxt.state.config_records[STATE]
    assert state["next"] == "share-keys" and isinstance(state["device"], bytes)
    with pytest.raises(ProtocolError, match="'share-keys' was expected"):
        app(_hand_built("masked-input", b"x"), ctxt)


def test_mod_passes_other_messages_through():
    app = make_ffn(_train, [secagg_mod])
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=7, reply_to_message_id="",
                    group_id="0", created_at=0.0, ttl=60.0, message_type="train")
    plain = app(Message(RecordDict(), metadata=meta), _context())
    assert "update" in plain.content.array_records  # not a secagg message: untouched


def test_mod_rejects_more_than_one_array_record():
    def two_records(msg, ctxt):
        reply = _train(msg, ctxt)
        reply.content["other"] = ArrayRecord({"c": Array(np.zeros(1))})
        return reply

    with pytest.raises((RoundAbortedError, TooFewInputsError), match="exactly one ArrayRecord"):
        _workflow()(LocalGrid(5, train=two_records), _model())


def test_masked_reply_carries_no_plaintext_arrays():
    seen = []

    class Spy(LocalGrid):
        def send_and_receive(self, messages, *, timeout=None):
            replies = super().send_and_receive(messages, timeout=timeout)
            seen.extend(r for r in replies if not r.has_error())
            return replies

    _workflow()(Spy(5), _model())
    assert seen and all(not r.content.array_records for r in seen)
    assert all(isinstance(r.content.config_records[RECORD]["payload"], bytes) for r in seen)


def test_workflow_refuses_non_masking_backends():
    with pytest.raises(InvalidInputError):
        SecAggWorkflow("plain")


def test_weighted_round_sums_weighted_inputs_and_their_weights_exactly():
    def weighted(msg, ctxt):
        reply = _train(msg, ctxt)
        reply.content["metrics"] = MetricRecord({"num-examples": ctxt.node_id - FIRST_NODE + 1})
        return reply

    gone = FIRST_NODE + 1
    grid = LocalGrid(5, {(gone, "masked-input"): "silent"}, train=weighted)
    result = _workflow(max_weight=6)(grid, _model())
    survivors = [n for n in grid.contexts if n != gone]
    weight = {n: n - FIRST_NODE + 1 for n in survivors}
    assert result.total_weight == sum(weight.values())
    np.testing.assert_array_equal(result.words, sum(weight[n] * _words(n) for n in survivors))
    expected = sum(weight[n] * (_words(n) - (2**15 - 1)) / 2**16 for n in survivors)
    np.testing.assert_allclose(result.mean()["b"].numpy(), expected[6:] / sum(weight.values()), atol=1e-12)


def test_a_weight_above_max_weight_is_a_dropout():
    def heavy(msg, ctxt):
        reply = _train(msg, ctxt)
        reply.content["metrics"] = MetricRecord({"num-examples": 9 if ctxt.node_id == FIRST_NODE else 1})
        return reply

    result = _workflow(max_weight=6)(LocalGrid(5, train=heavy), _model())
    assert "[0, 6]" in result.dropouts["masked-input"][FIRST_NODE]
    assert result.total_weight == 4
