"""Packed Paillier split in two (secagg.paillier.halves): the clients decrypt, the server never can."""

from __future__ import annotations

import numpy as np
import pytest

from secagg import make_backend
from secagg.errors import ProtocolError, TooFewInputsError
from secagg.paillier.halves import PackedPaillierServer
from secagg.paillier.keys import generate_keypair
from secagg.split import run_in_process


@pytest.fixture(scope="module")
def backend():
    return make_backend("paillier_packed", key_bits=1024, allow_insecure_small_key=True, clip=2.0,
                        precision_bits=16)


def _vectors(n, length, seed=0):
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-2, 2, length) for c in range(n)}


def test_split_round_gives_every_survivor_the_same_sum_within_the_quantization(backend):
    xs = _vectors(5, 300)
    server = backend.server_half(sorted(xs), 300)
    devices = {c: backend.device_half(c) for c in xs}
    run = run_in_process(server, devices, xs, {"upload": {3}})
    survivors = [0, 1, 2, 4]
    result = run.result
    assert result.included == survivors and result.aggregate is None  # the server never decrypts
    step = server.layout.step  # stochastic rounding: error below one step per summand
    for c in survivors:
        np.testing.assert_array_equal(devices[c].aggregate, devices[0].aggregate)
        assert np.abs(devices[c].aggregate - sum(xs[c] for c in survivors)).max() <= len(survivors) * step
    assert devices[3].aggregate is None


def test_the_server_half_holds_no_private_key(backend):
    server = backend.server_half([0, 1], 4)
    assert not any(type(v).__name__ == "PrivateKey" for v in vars(server).values())
    with pytest.raises(Exception, match="PublicKey"):
        PackedPaillierServer(backend.key, [0, 1], 4)


def test_a_plan_under_another_key_is_refused(backend):
    _, other = generate_keypair(1024, allow_insecure_small_key=True)
    server = PackedPaillierServer(other.public_key, [0, 1], 4, clip=2.0)
    device = backend.device_half(0)
    device.set_input(np.zeros(4))
    with pytest.raises(ProtocolError, match="another public key"):
        device.handle(server.start()[0])


def test_a_round_below_min_inputs_is_refused(backend):
    xs = _vectors(3, 8)
    with pytest.raises(TooFewInputsError):
        run_in_process(backend.server_half(sorted(xs), 8), {c: backend.device_half(c) for c in xs}, xs,
                       {"upload": {0, 1}})


def test_a_replayed_upload_is_refused(backend):
    xs = _vectors(2, 8)
    server = backend.server_half([0, 1], 8)
    plan = server.start()
    device = backend.device_half(0)
    device.set_input(xs[0])
    blob = device.handle(plan[0])
    server.receive(0, blob)
    with pytest.raises(ProtocolError):
        server.receive(0, blob)
