"""The device and server halves of the backends (secagg.split): the same bytes, apart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import make_backend
from secagg.errors import MalformedMessageError, ProtocolError, RoundAbortedError, TooFewInputsError
from secagg.masking.halves import MaskingDevice
from secagg.masking.quantize import step_size
from secagg.split import run_in_process

#: clip with a quantization step of exactly 2^-16: values on the grid quantize exactly
GRID_CLIP = (2**15 - 1) / 2**16


def _grid_vectors(n, length, seed=0):
    rng = np.random.default_rng(seed)
    words = {c: rng.integers(0, 2**16 - 1, length) for c in range(n)}
    return words, {c: (q - (2**15 - 1)) / 2**16 for c, q in words.items()}


def test_grid_values_quantize_exactly():
    assert step_size(GRID_CLIP, 16) == 2.0**-16


@pytest.mark.parametrize("name", ["plain", "secagg", "secagg+"])
def test_split_round_equals_aggregate(name):
    words, xs = _grid_vectors(6, 40)
    backend = make_backend(name, clip=GRID_CLIP, precision_bits=16) if name != "plain" else make_backend(name)
    server = backend.server_half(sorted(xs), 40)
    devices = {c: backend.device_half(c) for c in xs}
    stage = "upload" if name == "plain" else "MaskedInputCollection"
    absorbed = []
    run = run_in_process(server, devices, xs, {stage: {2}}, progress=absorbed.append)
    survivors = [c for c in xs if c != 2]
    assert run.result.included == survivors
    assert absorbed == survivors, "the progress hook sees each protected upload once, not the dropout"
    expected = sum(xs[c] for c in survivors)
    np.testing.assert_array_equal(run.result.aggregate, expected)
    if name != "plain":
        np.testing.assert_array_equal(run.result.words, sum(words[c] for c in survivors))
    in_process = backend.aggregate(xs, dropped=[2])
    np.testing.assert_array_equal(in_process.aggregate, expected)


def _frozen_round(backend, xs, drop_at=None, drop=()):
    """A round in which every device lives only as bytes between two messages."""
    server = backend.server_half(sorted(xs), len(next(iter(xs.values()))))
    frozen = {c: backend.device_half(c).to_bytes() for c in xs}
    outbox = server.start()
    while outbox:
        for c, message in outbox.items():
            if server.stage == drop_at and c in drop:
                continue
            device = MaskingDevice.from_bytes(frozen[c])
            if device.needs_input(message):
                device.set_input(xs[c])
            reply = device.handle(message)
            frozen[c] = device.to_bytes()
            server.receive(c, bytes(reply))
        outbox = server.advance()
    return server.result()


@settings(max_examples=6, deadline=None)
@given(drop_at=st.sampled_from([None, "AdvertiseKeys", "ShareKeys", "MaskedInputCollection", "Unmasking"]),
       seed=st.integers(0, 2**16))
def test_frozen_devices_sum_exactly_with_a_dropout_at_any_stage(drop_at, seed):
    words, xs = _grid_vectors(5, 17, seed)
    backend = make_backend("secagg+", clip=GRID_CLIP, precision_bits=16)
    result = _frozen_round(backend, xs, drop_at, {seed % 5})
    survivors = [c for c in xs if drop_at in (None, "Unmasking") or c != seed % 5]
    assert result.included == survivors
    np.testing.assert_array_equal(result.words, sum(words[c] for c in survivors))


def test_snapshot_damage_is_refused():
    backend = make_backend("secagg", clip=1.0, precision_bits=8)
    data = backend.device_half(3).to_bytes()
    with pytest.raises(MalformedMessageError):
        MaskingDevice.from_bytes(data[:-1])
    with pytest.raises(MalformedMessageError):
        MaskingDevice.from_bytes(data + b"\x00")


def test_server_half_refuses_spoofed_sender_and_too_few_inputs():
    _, xs = _grid_vectors(4, 8)
    backend = make_backend("secagg", clip=GRID_CLIP, precision_bits=16, min_inputs=4)
    server = backend.server_half(sorted(xs), 8)
    devices = {c: backend.device_half(c) for c in xs}
    config = server.start()
    with pytest.raises(ProtocolError):
        server.receive(1, devices[0].handle(config[0]))
    with pytest.raises((TooFewInputsError, RoundAbortedError)):
        run_in_process(backend.server_half(sorted(xs), 8), {c: backend.device_half(c) for c in xs}, xs,
                       {"MaskedInputCollection": {0}})


def test_device_applies_the_range_policy():
    backend = make_backend("secagg", clip=1.0, precision_bits=8)
    device = backend.device_half(0)
    with pytest.raises(Exception, match="outside"):
        device.set_input(np.array([0.5, 2.0]))


def test_backends_without_a_split_form_say_so():
    with pytest.raises(NotImplementedError, match="no split"):
        make_backend("paillier", key_bits=512, allow_insecure_small_key=True).server_half([0, 1], 4)


def test_devices_weight_themselves_and_the_total_weight_travels_masked():
    words, xs = _grid_vectors(5, 12, seed=3)
    backend = make_backend("secagg+", clip=GRID_CLIP, precision_bits=16)
    plan = backend.plan(sorted(xs), 12, max_weight=7)
    assert plan.weight_word and plan.config.length == 13
    server = backend.server_half(sorted(xs), 12, plan=plan)
    devices = {c: backend.device_half(c, max_weight=7) for c in xs}
    weight = {c: c + 2 for c in xs}
    for c, device in devices.items():
        device.set_weight(weight[c])
    run = run_in_process(server, devices, xs, {"MaskedInputCollection": {1}})
    survivors = [0, 2, 3, 4]
    assert run.result.total_weight == sum(weight[c] for c in survivors)
    np.testing.assert_array_equal(run.result.words, sum(weight[c] * words[c] for c in survivors))
    np.testing.assert_allclose(run.result.aggregate, sum(weight[c] * xs[c] for c in survivors), atol=1e-9)
    with pytest.raises(Exception, match=r"integer in \[0, 7\]"):
        backend.device_half(0, max_weight=7).set_weight(8)
    frozen = MaskingDevice.from_bytes(devices[0].to_bytes())
    assert frozen.max_weight == 7
