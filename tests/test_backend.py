"""The aggregation backend interface, checked on the plain backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secagg import PlainBackend, RoundResult, make_backend
from secagg.errors import InvalidInputError, TooFewInputsError

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(arrays(np.float64, 7, elements=finite), min_size=2, max_size=8),
    weights=st.lists(st.floats(0, 10), min_size=8, max_size=8),
    drop_mask=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_plain_aggregate_is_the_weighted_sum_of_survivors(data, weights, drop_mask):
    updates = dict(enumerate(data))
    dropped = [c for c in updates if drop_mask[c]]
    survivors = [c for c in updates if not drop_mask[c]]
    backend = PlainBackend(min_inputs=1)
    if not survivors:
        with pytest.raises(TooFewInputsError):
            backend.aggregate(updates, dropped=dropped)
        return
    w = {c: weights[c] for c in updates}
    result = backend.aggregate(updates, weights=w, dropped=dropped)
    expected = sum(w[c] * data[c] for c in survivors)
    assert np.allclose(result.aggregate, expected, rtol=1e-12, atol=1e-6)
    assert result.included == survivors
    assert result.total_weight == pytest.approx(sum(w[c] for c in survivors))
    assert set(result.cost.bytes_up) == set(survivors)


def test_mean_is_weighted_average():
    result = make_backend("plain").aggregate([np.ones(3), 3 * np.ones(3)], weights={0: 1, 1: 3})
    assert np.allclose(result.mean, (1 + 9) / 4)


def test_min_inputs_guard_refuses_isolating_one_client():
    backend = make_backend("plain", min_inputs=3)
    updates = {c: np.full(4, c, float) for c in range(5)}
    with pytest.raises(TooFewInputsError, match="min_inputs=3"):
        backend.aggregate(updates, dropped=[1, 2, 3])
    assert isinstance(backend.aggregate(updates, dropped=[1, 2]), RoundResult)


@pytest.mark.parametrize(
    "updates, match",
    [
        ({0: np.ones(3), 1: np.ones(4)}, "length 4"),
        ({0: np.ones(3), 1: np.array([1, np.nan, 0])}, "NaN or inf"),
        ({0: np.ones((2, 2)), 1: np.ones((2, 2))}, "1-D numeric"),
        ({}, "empty"),
    ],
)
def test_bad_updates_get_clear_errors(updates, match):
    with pytest.raises(InvalidInputError, match=match):
        make_backend("plain", min_inputs=1).aggregate(updates)


def test_bad_weights_and_dropped_get_clear_errors():
    backend = make_backend("plain")
    updates = {0: np.ones(2), 1: np.ones(2)}
    with pytest.raises(InvalidInputError, match="weights missing"):
        backend.aggregate(updates, weights={0: 1.0})
    with pytest.raises(InvalidInputError, match="weight of client 1"):
        backend.aggregate(updates, weights={0: 1.0, 1: -2.0})
    with pytest.raises(InvalidInputError, match="sent no update"):
        backend.aggregate(updates, dropped=[7])
    with pytest.raises(InvalidInputError, match="min_inputs"):
        make_backend("plain", min_inputs=0)
    with pytest.raises(InvalidInputError, match="unknown backend"):
        make_backend("nope")


def test_sparse_round_reveals_support_and_checks_it():
    backend = make_backend("plain", record_view=True)
    updates = {0: np.array([1.0, 2.0, 0.0, 0.0, 0.0, 0.0]), 1: np.array([0.0, 0.0, 0.0, 0.0, 5.0, 6.0])}
    result = backend.aggregate(updates, support={0: np.array([0]), 1: np.array([2])}, block_size=2)
    assert np.array_equal(result.aggregate, [1, 2, 0, 0, 5, 6])
    assert {c: s.tolist() for c, s in result.view.support.items()} == {0: [0], 1: [2]}
    assert result.cost.bytes_up[0] < updates[0].nbytes
    with pytest.raises(InvalidInputError, match="outside its declared support"):
        backend.aggregate(updates, support={0: np.array([1]), 1: np.array([2])}, block_size=2)
    with pytest.raises(InvalidInputError, match="block_size"):
        backend.aggregate(updates, support={0: np.array([0]), 1: np.array([2])}, block_size=4)


def test_plain_view_shows_each_upload():
    backend = make_backend("plain", record_view=True)
    updates = {0: np.arange(3.0), 1: np.ones(3)}
    view = backend.aggregate(updates).view
    assert np.array_equal(view.per_client[0], updates[0]) and np.array_equal(view.aggregate, [1, 2, 3])
