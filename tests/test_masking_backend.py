"""The "secagg" and "secagg+" aggregation backends."""

import numpy as np
import pytest

from secagg import make_backend
from secagg.errors import InsecureParameterError, InvalidInputError, RoundAbortedError, TooFewInputsError


def _updates(n, length, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return {c: rng.normal(0, scale, length) for c in range(n)}


@pytest.mark.parametrize("name", ["secagg", "secagg+"])
def test_weighted_sum_of_survivors_within_quantization_error(name):
    n, length, bits, clip = 70, 200, 20, 1.0
    ups = _updates(n, length)
    weights = {c: float(1 + c % 4) for c in ups}
    dropped = [3, 10, 44]
    backend = make_backend(name, clip=clip, precision_bits=bits, record_view=True, out_of_range="clip")
    res = backend.aggregate(ups, weights=weights, dropped=dropped)
    included = [c for c in ups if c not in dropped]
    assert res.included == included
    exact = sum(weights[c] * np.clip(ups[c], -clip, clip) for c in included)
    step = clip / ((1 << (bits - 1)) - 1)  # c / L
    assert np.max(np.abs(res.aggregate - exact)) <= sum(weights[c] for c in included) * step
    assert res.total_weight == sum(weights[c] for c in included)
    info = res.info
    assert info["modulus"] > ((1 << bits) - 2) * sum(weights.values())  # all clients, not neighbours
    assert info["t"] <= info["k"] and info["complete_graph"] == (name == "secagg")
    if name == "secagg+":
        assert info["k"] < n - 1 and info["security_bits"] == 40.0
    # the server's per-client view is masked noise, unrelated to the update
    for c in included[:5]:
        assert abs(np.corrcoef(res.view.per_client[c], ups[c])[0, 1]) < 0.35
    assert np.array_equal(res.view.aggregate, res.aggregate)
    assert set(res.cost.bytes_up) == set(ups) and res.cost.server_seconds > 0


def test_grid_aligned_inputs_with_integer_weights_are_exact():
    clip, bits = 1.0, 8
    step = clip / 127  # c / L, L = 2^7 - 1
    rng = np.random.default_rng(1)
    ups = {c: (rng.integers(0, 255, 50) * step - clip) for c in range(6)}
    weights = {c: float(c + 1) for c in ups}
    res = make_backend("secagg", clip=clip, precision_bits=bits).aggregate(ups, weights=weights, dropped=[2])
    exact = sum(weights[c] * ups[c] for c in ups if c != 2)
    assert np.allclose(res.aggregate, exact, atol=1e-9)


def test_guard_refuses_fewer_than_t_inputs():
    ups = _updates(8, 10)
    backend = make_backend("secagg", min_inputs=2)
    t = backend.parameters(8).t
    with pytest.raises(TooFewInputsError, match=f"t={t}"):
        backend.aggregate(ups, dropped=list(range(8 - t + 1)))
    with pytest.raises(TooFewInputsError):
        make_backend("secagg+", min_inputs=7).aggregate(ups, dropped=[0, 1])


def test_explicit_k_t_and_protocol_abort():
    ups = _updates(10, 10)
    backend = make_backend("secagg+", k=2, t=2)
    with pytest.raises(RoundAbortedError):
        backend.aggregate(ups, dropped=list(range(6)))


def test_early_drop_stage_and_option_checks():
    ups = _updates(12, 16)
    res = make_backend("secagg", drop_stage="share_keys").aggregate(ups, dropped=[1])
    assert 1 not in res.included and res.info["drop_stage"] == "share_keys"
    for bad in ({"graph": "ring"}, {"drop_stage": "unmasking"}, {"k": 4}, {"clip": -1.0}, {"precision_bits": 70}):
        with pytest.raises(InvalidInputError):
            make_backend("secagg", **bad)


@pytest.mark.parametrize("name", ["secagg", "secagg+"])
def test_active_backend_picks_a_split_view_safe_threshold_and_sums_exactly(name):
    ups = _updates(12, 40, seed=4)
    backend = make_backend(name, active=True, clip=1.0, precision_bits=16)
    res = backend.aggregate(ups, dropped=[5])
    info = res.info
    assert info["active"] and 2 * info["t"] - info["k"] > info["corrupt_neighbours"] >= 1
    assert info["tolerated_dropout_rate"] >= 1 / 12
    exact = sum(np.clip(ups[c], -1, 1) for c in res.included)
    assert res.included == [c for c in ups if c != 5]
    assert np.max(np.abs(res.aggregate - exact)) <= len(res.included) * 2 / ((1 << 16) - 1)
    with pytest.raises(InsecureParameterError, match="2t - k > c_k"):
        make_backend(name, active=True, k=11, t=6).aggregate(ups)
    with pytest.raises(InsecureParameterError, match="allow_insecure_threshold"):
        make_backend(name, k=11, t=1, min_inputs=1).aggregate(ups)
