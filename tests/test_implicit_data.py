"""Implicit data: binarisation, leave-one-out by time with sampled negatives, per-user holdout."""

from __future__ import annotations

import numpy as np
import pytest

from fedmf.data import Ratings, holdout_split, load_implicit, loo_split, synthetic_ratings
from fedmf.errors import ConfigError


def _ratings(rows):
    rows = np.array(rows, dtype=np.int64)
    return Ratings(rows[:, 0], rows[:, 1], rows[:, 2].astype(float), rows[:, 3],
                   int(rows[:, 0].max()) + 1, 12, np.arange(1, 13), np.arange(1, 13), "tiny")


def test_loo_takes_latest_as_test_second_latest_as_validation():
    # user 0: items 3 (t=5), 1 (t=9), 7 (t=2), 4 (t=9, tie: higher item id is later)
    # user 1: two interactions only -> all train, not evaluated
    data = _ratings([(0, 3, 5, 5), (0, 1, 1, 9), (0, 7, 2, 2), (0, 4, 3, 9), (1, 0, 4, 1), (1, 2, 4, 3)])
    split = loo_split(data, seed=0, n_negatives=3)
    assert split.test_indices[split.test_indptr[0]:split.test_indptr[1]].tolist() == [4]
    assert split.val_indices[split.val_indptr[0]:split.val_indptr[1]].tolist() == [1]
    assert split.train_items(0).tolist() == [3, 7]
    assert split.train_items(1).tolist() == [0, 2] and split.test_indptr[2] - split.test_indptr[1] == 0
    negatives = np.r_[split.val_negatives[0], split.test_negatives[0]]
    assert len(set(negatives.tolist())) == 6, "198-style draw: no repeats across val and test"
    assert not set(negatives.tolist()) & {1, 3, 4, 7}, "negatives are items the user never touched"
    assert np.all(split.test_negatives[1] == -1)


def test_loo_on_movielens_matches_the_pfedrec_protocol(ml100k_root):
    split = load_implicit("ml-100k", "loo", seed=0)
    assert (split.n_users, split.n_items) == (943, 1682)
    assert np.all(np.diff(split.test_indptr) == 1) and np.all(np.diff(split.val_indptr) == 1)
    assert split.train_indices.size == 100_000 - 2 * 943
    assert split.test_negatives.shape == (943, 99) and split.val_negatives.shape == (943, 99)
    P = split.train_dense()
    for u in (0, 500, 942):
        seen = set(np.flatnonzero(P[u])) | {split.test_indices[u], split.val_indices[u]}
        negs = set(split.test_negatives[u]) | set(split.val_negatives[u])
        assert len(negs) == 198 and not negs & seen
    again = load_implicit("ml-100k", "loo", seed=0)
    assert np.array_equal(again.test_negatives, split.test_negatives), "seeded"
    other = load_implicit("ml-100k", "loo", seed=1)
    assert not np.array_equal(other.test_negatives, split.test_negatives)
    assert np.array_equal(other.test_indices, split.test_indices), "the held-out items do not depend on the seed"


def test_binarisation_keeps_one_interaction_per_pair_and_thresholds():
    data = _ratings([(0, 3, 5, 5), (0, 3, 2, 8), (0, 1, 1, 9), (0, 7, 2, 2), (0, 4, 3, 1)])
    split = loo_split(data, seed=0, n_negatives=2)
    assert split.test_indices.tolist() == [1] and split.val_indices.tolist() == [3]
    high = loo_split(data, seed=0, n_negatives=2, min_rating=2)
    assert 1 not in np.r_[high.train_indices, high.val_indices, high.test_indices]


def test_holdout_partitions_each_users_interactions():
    ratings = synthetic_ratings(n_users=60, n_items=50, density=0.2, min_per_user=5, seed=2)
    split = holdout_split(ratings, seed=4, test_fraction=0.2, val_fraction=0.1)
    assert split.test_negatives is None
    total = 0
    for u in range(split.n_users):
        parts = [split.train_items(u), split.val_indices[split.val_indptr[u]:split.val_indptr[u + 1]],
                 split.test_indices[split.test_indptr[u]:split.test_indptr[u + 1]]]
        joined = np.concatenate(parts)
        assert len(set(joined.tolist())) == joined.size, "parts are disjoint"
        assert parts[0].size >= 1 and parts[2].size >= 1
        total += joined.size
    assert total == np.unique(ratings.users * 50 + ratings.items).size


def test_bad_options_are_config_errors():
    ratings = synthetic_ratings(n_users=20, n_items=30, density=0.3, min_per_user=5, seed=1)
    with pytest.raises(ConfigError, match="n_negatives"):
        loo_split(ratings, n_negatives=40)
    with pytest.raises(ConfigError, match="test_fraction"):
        holdout_split(ratings, test_fraction=1.5)
    with pytest.raises(ConfigError, match="implicit split"):
        load_implicit("synthetic", "u1")
