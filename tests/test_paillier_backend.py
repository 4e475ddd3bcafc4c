"""The "paillier" and "paillier_packed" aggregation backends (real keys, real ciphertexts)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import available_backends, make_backend
from secagg.errors import (
    HeadroomExceededError,
    InsecureParameterError,
    InvalidInputError,
    TooFewInputsError,
)
from secagg.paillier import generate_keypair
from secagg.paillier.packing import aligned_positions

SMALL = 512
NAMES = ("paillier", "paillier_packed")


@pytest.fixture(scope="module")
def sk():
    return generate_keypair(SMALL, allow_insecure_small_key=True)[1]


def _updates(n, length, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {cid: rng.uniform(-scale, scale, length) for cid in range(n)}


def test_backends_registered():
    assert set(NAMES) <= set(available_backends())


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 6), length=st.integers(1, 60), seed=st.integers(0, 2**32),
       weights=st.lists(st.floats(0.0, 3.0), min_size=6, max_size=6), drop=st.booleans())
@pytest.mark.parametrize("name", NAMES)
def test_weighted_sum_of_survivors(sk, name, n, length, seed, weights, drop):
    backend = make_backend(name, key=sk, allow_insecure_small_key=True, clip=1.0)
    ups = _updates(n, length, seed)
    w = {cid: weights[cid] for cid in ups}
    dropped = [n - 1] if drop and n > 2 else []
    res = backend.aggregate(ups, weights=w, dropped=dropped)
    inc = [c for c in ups if c not in dropped]
    assert res.included == inc
    expected = sum(w[c] * ups[c] for c in inc)
    if name == "paillier":
        tol = len(inc) * 2.0**-32
    else:
        tol = len(inc) * res.info["layout"]["step"]
    assert np.all(np.abs(res.aggregate - expected) <= tol + 1e-12)
    assert res.total_weight == pytest.approx(sum(w[c] for c in inc))


@pytest.mark.parametrize("name", NAMES)
def test_server_sees_ciphertexts_only_and_costs_are_real(sk, name):
    backend = make_backend(name, key=sk, allow_insecure_small_key=True, record_view=True)
    assert backend.server_learns_aggregate is False
    res = backend.aggregate(_updates(3, 100))
    assert res.view.per_client == {} and res.view.aggregate is None
    width = sk.public_key.ciphertext_bytes
    n_ct = res.info["ciphertexts_per_client"]
    assert n_ct == (100 if name == "paillier" else -(-100 // res.info["layout"]["slots"]))
    for cid in res.included:
        assert n_ct * width < res.cost.bytes_up[cid] < n_ct * width + 200
        assert res.cost.bytes_down[cid] >= n_ct * width
        assert res.cost.client_seconds[cid] >= res.info["decrypt_seconds"] > 0
    assert res.cost.server_seconds > 0


def test_setup_cost_on_first_round_only():
    backend = make_backend("paillier_packed", key_bits=SMALL, allow_insecure_small_key=True)
    first = backend.aggregate(_updates(2, 10))
    second = backend.aggregate(_updates(2, 10, seed=1))
    assert first.cost.setup_seconds > 0 and second.cost.setup_seconds == 0
    assert first.info["key_bits"] == SMALL


def test_small_key_needs_opt_in(sk):
    with pytest.raises(InsecureParameterError):
        make_backend("paillier_packed", key_bits=SMALL)
    with pytest.raises(InsecureParameterError):
        make_backend("paillier", key=sk)


def test_packed_clipping_and_layout_in_info(sk):
    backend = make_backend("paillier_packed", key=sk, allow_insecure_small_key=True, clip=0.5,
                           precision_bits=12, out_of_range="clip")
    ups = {0: np.array([0.1, 2.0, -0.7]), 1: np.array([0.2, 0.3, 0.4])}
    res = backend.aggregate(ups)
    assert res.info["clipped"] == 2
    assert res.info["layout"]["max_summands"] == 2 and res.info["layout"]["precision_bits"] == 12
    np.testing.assert_allclose(res.aggregate, [0.3, 0.8, -0.1], atol=2 * res.info["layout"]["step"])


def test_unpacked_out_of_range_is_an_error(sk):
    backend = make_backend("paillier", key=sk, allow_insecure_small_key=True, clip=0.5)
    with pytest.raises(InvalidInputError):
        backend.aggregate({0: np.array([0.1]), 1: np.array([0.6])})


def test_declared_headroom_is_checked(sk):
    backend = make_backend("paillier_packed", key=sk, allow_insecure_small_key=True, max_summands=2)
    backend.aggregate(_updates(2, 5))
    with pytest.raises(HeadroomExceededError):
        backend.aggregate(_updates(3, 5))
    with pytest.raises(HeadroomExceededError):  # weight 3 needs 3 summands
        backend.aggregate(_updates(2, 5), weights={0: 3.0, 1: 1.0})


@pytest.mark.parametrize("name", NAMES)
def test_min_inputs_guard(sk, name):
    backend = make_backend(name, key=sk, allow_insecure_small_key=True, min_inputs=3)
    with pytest.raises(TooFewInputsError):
        backend.aggregate(_updates(3, 4), dropped=[0])


def test_workers_give_the_same_aggregate(sk):
    ups = _updates(3, 300)
    res = make_backend("paillier_packed", key=sk, allow_insecure_small_key=True, workers=2).aggregate(ups)
    assert np.all(np.abs(res.aggregate - sum(ups.values())) <= 3 * res.info["layout"]["step"])


@pytest.mark.parametrize("workers", [1, 2])
def test_djn_obfuscation_through_the_key_holders_crt_path(sk, workers):
    """obfuscation='djn' with the clients' private key: workers rebuild the CRT tables."""
    ups = _updates(3, 300)
    backend = make_backend("paillier_packed", key=sk, allow_insecure_small_key=True, workers=workers,
                           obfuscation="djn", djn_exponent_bits=224)
    res = backend.aggregate(ups)
    assert res.info["obfuscation"] == "djn" and backend._obfuscator.private_key is sk
    assert np.all(np.abs(res.aggregate - sum(ups.values())) <= 3 * res.info["layout"]["step"])
    backend.close()


def test_2048_bit_packed_round():
    backend = make_backend("paillier_packed", clip=1.0)
    ups = _updates(4, 2000, scale=0.8)
    res = backend.aggregate(ups)
    assert res.info["key_bits"] == 2048 and res.info["obfuscation"] == "crt"
    assert np.all(np.abs(res.aggregate - sum(ups.values())) <= 4 * res.info["layout"]["step"])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(2, 5), blocks=st.integers(1, 6),
       weights=st.lists(st.floats(0.0, 3.0), min_size=5, max_size=5))
@pytest.mark.parametrize("name", NAMES)
def test_sparse_rounds_upload_only_the_support(sk, name, seed, n, blocks, weights):
    """PartText: only support cells go up (with 4-byte indices); the sum is the dense one."""
    rng = np.random.default_rng(seed)
    length, block = 40 * 4, 4
    ups, support = {}, {}
    for c in range(n):
        chosen = np.sort(rng.choice(length // block, blocks, replace=False))
        x = np.zeros(length)
        for b in chosen:
            x[b * block:(b + 1) * block] = rng.uniform(-1, 1, block)
        ups[c], support[c] = x, chosen
    w = {c: weights[c] for c in ups}
    backend = make_backend(name, key=sk, allow_insecure_small_key=True)
    dense = backend.aggregate(ups, weights=w)
    sparse = backend.aggregate(ups, weights=w, support=support, block_size=block)
    assert sparse.info["sparse"] == "sparse"
    step = sparse.info["layout"]["step"] if name == "paillier_packed" else 2.0**-32
    expected = sum(w[c] * ups[c] for c in ups)
    assert np.all(np.abs(sparse.aggregate - expected) <= n * step + 1e-12)
    assert np.all(np.abs(dense.aggregate - expected) <= n * step + 1e-12)
    width = sk.public_key.ciphertext_bytes
    for c in ups:
        if name == "paillier":
            cells = blocks * block
        else:
            slots = sparse.info["layout"]["slots"]  # item-aligned: each block in whole ciphertexts
            positions = aligned_positions(length, block, slots)[0]
            held = {positions[e] // slots for b in support[c] for e in range(b * block, (b + 1) * block)}
            # the server's view: every block sharing a ciphertext with a declared one
            seen = sorted({e // block for e in range(length) if positions[e] // slots in held})
            assert sparse.view.support[c].tolist() == seen
            cells = len(held)
        assert cells * (width + 4) < sparse.cost.bytes_up[c] < cells * (width + 4) + 100
        assert sparse.cost.bytes_up[c] <= dense.cost.bytes_up[c] + 4 * cells
