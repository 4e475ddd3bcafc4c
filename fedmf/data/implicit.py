"""Implicit-feedback data: binarised interactions and the two ranking splits.

Every observed rating becomes an interaction (p_ui = 1), as in the PFedRec code
(fcf_pfedrec_personalfr.md §2.3); ``min_rating`` keeps only ratings >= it. Two splits,
both seeded and shared by every implicit trainer:

* ``loo``: leave-one-out by timestamp (He et al. 2017; the PFedRec code): each
  user's latest interaction is the test item, the second latest the validation item,
  the rest is train (ties in time broken by item id, as in
  :func:`fedmf.data.splits.leave_one_out`; users with fewer than 3 interactions keep
  all in train and are not evaluated). 2 x ``n_negatives`` items the user never
  interacted with are drawn once per user without replacement: the first
  ``n_negatives`` rank against the validation item, the last against the test item.
* ``holdout``: a per-user random holdout for full ranking: ``test_fraction`` of each
  user's interactions (rounded, at least one, leaving at least one for training)
  goes to test and ``val_fraction`` to validation. No sampled negatives.

numpy's generator is fine here: this is data shuffling, not key material.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .ratings import Ratings, Split
from .splits import leave_one_out, load_ratings

IMPLICIT_SPLITS = ("loo", "holdout")
LOO_TIES = ("item", "file")


@dataclass(frozen=True)
class ImplicitSplit:
    """Training positives and held-out items of one implicit split, CSR per user.

    User ``u``'s training items are ``train_indices[train_indptr[u]:train_indptr[u + 1]]``
    (sorted); the validation and test parts use the same layout. For ``loo`` each
    evaluated user has exactly one validation and one test item, and
    ``val_negatives[u]`` / ``test_negatives[u]`` hold its sampled negatives (rows of
    -1 for users not evaluated); for ``holdout`` they are ``None``.
    """

    name: str
    n_users: int
    n_items: int
    train_indptr: np.ndarray
    train_indices: np.ndarray
    val_indptr: np.ndarray
    val_indices: np.ndarray
    test_indptr: np.ndarray
    test_indices: np.ndarray
    val_negatives: np.ndarray | None = None
    test_negatives: np.ndarray | None = None

    def train_items(self, user: int) -> np.ndarray:
        return self.train_indices[self.train_indptr[user] : self.train_indptr[user + 1]]

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(indptr, indices, negatives) of ``"val"`` or ``"test"``."""
        if name == "val":
            return self.val_indptr, self.val_indices, self.val_negatives
        if name == "test":
            return self.test_indptr, self.test_indices, self.test_negatives
        raise ConfigError(f"part must be 'val' or 'test', got {name!r}")

    def train_counts(self) -> np.ndarray:
        """Training interactions per user."""
        return np.diff(self.train_indptr)

    def train_users(self) -> np.ndarray:
        """The user of every training interaction (COO rows, aligned with train_indices)."""
        return np.repeat(np.arange(self.n_users), self.train_counts())

    def train_dense(self) -> np.ndarray:
        """The n_users x n_items 0/1 matrix P of training interactions (float64)."""
        P = np.zeros((self.n_users, self.n_items))
        P[self.train_users(), self.train_indices] = 1.0
        return P


def _csr(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((items, users))
    indptr = np.searchsorted(users[order], np.arange(n_users + 1)).astype(np.int64)
    return indptr, items[order].astype(np.int64)


def binarise(ratings: Ratings, min_rating: float = 0.0) -> Ratings:
    """Ratings >= ``min_rating`` as interactions (value 1), one per (user, item)."""
    keep = ratings.ratings >= min_rating
    # keep the latest timestamp of a repeated (user, item) pair
    order = np.lexsort((-ratings.timestamps, ratings.items, ratings.users))
    order = order[keep[order]]
    pairs = ratings.users[order] * ratings.n_items + ratings.items[order]
    first = np.r_[True, pairs[1:] != pairs[:-1]]
    mask = np.zeros(len(ratings), bool)
    mask[order[first]] = True
    sub = ratings.subset(mask)
    return Ratings(sub.users, sub.items, np.ones(len(sub)), sub.timestamps, sub.n_users,
                   sub.n_items, sub.user_ids, sub.item_ids, sub.name)


def leave_one_out_file_order(data: Ratings) -> Split:
    """Leave-one-out with ties in time broken by file order, as the PFedRec code does.

    The code ranks each user's timestamps with pandas ``rank(method='first',
    ascending=False)``: among interactions sharing the latest timestamp, the one that
    comes first in the file is the test item (then validation). On ML-100K 415 of 943
    users have such a tie, and breaking it by item id instead picks less popular test
    items (mean training count 124 against 171).
    """
    order = np.lexsort((-np.arange(len(data)), data.timestamps, data.users))
    users = data.users[order]
    last = np.r_[users[1:] != users[:-1], True]
    second = np.r_[last[1:], False] & ~last
    eligible = np.bincount(users, minlength=data.n_users)[users] >= 3
    part = np.zeros(len(data), np.int8)  # 0 train, 1 validation, 2 test
    part[order[last & eligible]] = 2
    part[order[second & eligible]] = 1
    return Split(data.subset(part == 0), data.subset(part == 2), data.subset(part == 1),
                 f"{data.name}:loo-file-order")


def loo_split(ratings: Ratings, *, seed: int = 0, n_negatives: int = 99, min_rating: float = 0.0,
              ties: str = "item") -> ImplicitSplit:
    """Leave-one-out by timestamp with ``n_negatives`` sampled negatives for validation and test.

    ``ties``: ``"item"`` breaks ties in time by item id (:func:`fedmf.data.splits.leave_one_out`),
    ``"file"`` by file order (:func:`leave_one_out_file_order`, the PFedRec code's rule).
    """
    if n_negatives < 1:
        raise ConfigError(f"n_negatives must be >= 1, got {n_negatives}")
    if ties not in LOO_TIES:
        raise ConfigError(f"ties must be one of {LOO_TIES}, got {ties!r}")
    data = binarise(ratings, min_rating)
    split = leave_one_out(data) if ties == "item" else leave_one_out_file_order(data)
    n, m = data.n_users, data.n_items
    train = _csr(split.train.users, split.train.items, n)
    val = _csr(split.validation.users, split.validation.items, n)
    test = _csr(split.test.users, split.test.items, n)
    rng = np.random.default_rng(seed)
    negatives = np.full((n, 2 * n_negatives), -1, dtype=np.int64)
    all_indptr, all_items = _csr(data.users, data.items, n)
    for u in np.flatnonzero(np.diff(test[0])):
        seen = np.zeros(m, bool)
        seen[all_items[all_indptr[u] : all_indptr[u + 1]]] = True
        unseen = np.flatnonzero(~seen)
        if unseen.size < 2 * n_negatives:
            raise ConfigError(
                f"user {u} has only {unseen.size} items it never interacted with, fewer than the "
                f"2 x {n_negatives} sampled negatives; lower n_negatives"
            )
        negatives[u] = rng.choice(unseen, 2 * n_negatives, replace=False)
    return ImplicitSplit(f"{ratings.name}:implicit-loo", n, m, *train, *val, *test,
                         negatives[:, :n_negatives].copy(), negatives[:, n_negatives:].copy())


def holdout_split(
    ratings: Ratings, *, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1,
    min_rating: float = 0.0,
) -> ImplicitSplit:
    """A per-user random holdout (full-ranking evaluation, no sampled negatives)."""
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ConfigError(
            f"need 0 < test_fraction < 1, 0 <= val_fraction and a sum below 1; got "
            f"test_fraction={test_fraction}, val_fraction={val_fraction}"
        )
    data = binarise(ratings, min_rating)
    rng = np.random.default_rng(seed)
    indptr, items = _csr(data.users, data.items, data.n_users)
    part = np.zeros(items.size, np.int8)  # 0 train, 1 validation, 2 test
    for u in range(data.n_users):
        lo, hi = indptr[u], indptr[u + 1]
        size = hi - lo
        n_test = min(max(int(round(test_fraction * size)), 1), size - 1)
        n_val = min(int(round(val_fraction * size)), size - 1 - n_test)
        if n_test < 1:
            continue
        chosen = lo + rng.permutation(size)[: n_test + max(n_val, 0)]
        part[chosen[:n_test]] = 2
        part[chosen[n_test:]] = 1
    users = np.repeat(np.arange(data.n_users), np.diff(indptr))
    parts = [_csr(users[part == k], items[part == k], data.n_users) for k in (0, 1, 2)]
    return ImplicitSplit(f"{ratings.name}:implicit-holdout", data.n_users, data.n_items,
                         *parts[0], *parts[1], *parts[2])


def load_implicit(dataset: str, split: str = "loo", *, seed: int = 0, n_negatives: int = 99,
                  download: bool = True, ties: str = "item") -> ImplicitSplit:
    """Load ``dataset`` (``synthetic``, ``ml-100k``, ``ml-1m``) as an implicit split."""
    if split not in IMPLICIT_SPLITS:
        raise ConfigError(f"unknown implicit split {split!r}; choose one of {IMPLICIT_SPLITS}")
    ratings = load_ratings(dataset, seed=seed, download=download)
    if split == "loo":
        return loo_split(ratings, seed=seed, n_negatives=n_negatives, ties=ties)
    return holdout_split(ratings, seed=seed)
