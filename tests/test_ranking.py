"""Ranking metrics: hand-computed examples, pessimistic ties, properties against loops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmf.data import ImplicitSplit
from fedmf.errors import ConfigError
from fedmf.ranking import (
    evaluate_ranking,
    full_ranking_metrics,
    hit_ratio_at_k,
    ndcg_at_k,
    sampled_ranks,
    top_k,
)


def test_sampled_rank_counts_ties_against_the_held_out_item():
    positive = np.array([0.5, 0.5, 0.9])
    negatives = np.array([[0.1, 0.2, 0.3], [0.5, 0.6, 0.1], [0.9, 0.9, 0.9]])
    assert sampled_ranks(positive, negatives).tolist() == [1, 3, 4]


def test_hr_and_ndcg_by_hand():
    ranks = np.array([1, 3, 11])
    assert hit_ratio_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1.0 + np.log(2) / np.log(4)) / 3)
    assert ndcg_at_k(np.array([2]), 1) == 0.0


def test_full_ranking_by_hand():
    # scores over 6 items; item 0 is a training item and must be skipped
    scores = np.array([[9.0, 1.0, 5.0, 4.0, 3.0, 2.0]])
    top = top_k(scores, 3, [np.array([0])])
    assert top.tolist() == [[2, 3, 4]]
    m = full_ranking_metrics(top, [np.array([3, 5])])
    assert m["precision"][0] == pytest.approx(1 / 3)
    assert m["recall"][0] == pytest.approx(1 / 2)
    assert m["ap"][0] == pytest.approx((1 / 2) / 2), "one hit at position 2, normalised by min(3, 2)"


def _split_for(train, test, negatives, n_items):
    n = len(train)
    def csr(sets):
        return np.r_[0, np.cumsum([len(s) for s in sets])], np.concatenate([np.array(s, np.int64) for s in sets])
    tr, te = csr(train), csr(test)
    return ImplicitSplit("hand", n, n_items, *tr, *te, *te, np.array(negatives), np.array(negatives))


def test_evaluate_ranking_on_a_hand_built_split():
    # user 0: train {0}, test 1, negatives {2, 3}; user 1: train {2}, test 3, negatives {0, 1}
    split = _split_for([[0], [2]], [[1], [3]], [[2, 3], [0, 1]], 4)
    table = np.array([[5.0, 4.0, 3.0, 1.0], [2.0, 9.0, 0.0, 2.0]])
    out = evaluate_ranking(lambda users: table[users], split, "test", k=1)
    # user 0: test 4.0 beats 3, 1 -> rank 1; top-1 over items 1..3 is item 1 -> hit
    # user 1: test 2.0 ties negative 0 (2.0), loses to 1 (9.0) -> rank 3; top-1 is item 1 -> miss
    assert out["hr_at_1"] == pytest.approx(0.5) and out["ndcg_at_1"] == pytest.approx(0.5)
    assert out["precision_at_1"] == pytest.approx(0.5) and out["map_at_1"] == pytest.approx(0.5)
    assert out["recall_at_1"] == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 8), st.integers(1, 6))
def test_full_ranking_matches_a_loop(seed, n_items_extra, k):
    rng = np.random.default_rng(seed)
    m = k + n_items_extra + 2
    scores = rng.integers(0, 4, size=(5, m)).astype(float) + rng.random((5, m)) * 1e-3
    relevant = [rng.choice(m, rng.integers(1, m), replace=False) for _ in range(5)]
    top = top_k(scores, k)
    got = full_ranking_metrics(top, relevant)
    for r in range(5):
        ranked = list(np.argsort(-scores[r], kind="stable")[:k])
        assert ranked == top[r].tolist()
        hits = [i in set(relevant[r].tolist()) for i in ranked]
        ap = sum(sum(hits[: j + 1]) / (j + 1) for j in range(k) if hits[j]) / min(k, relevant[r].size)
        assert got["precision"][r] == pytest.approx(sum(hits) / k)
        assert got["recall"][r] == pytest.approx(sum(hits) / relevant[r].size)
        assert got["ap"][r] == pytest.approx(ap)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.integers(0, 5))
def test_sampled_rank_is_one_plus_the_negatives_not_below(negatives, positive):
    rank = sampled_ranks(np.array([float(positive)]), np.array([negatives], float))[0]
    assert rank == 1 + sum(n >= positive for n in negatives)


def test_bad_scores_are_config_errors():
    with pytest.raises(ConfigError, match="NaN"):
        sampled_ranks(np.array([np.nan]), np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="k must be"):
        top_k(np.zeros((1, 3)), 4)
