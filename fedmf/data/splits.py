"""Train / test splits: the GroupLens files, a seeded random holdout, leave-one-out by time."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from . import movielens
from .ratings import Ratings, Split
from .synthetic import synthetic_ratings

GROUPLENS_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
SPLITS = (*GROUPLENS_SPLITS, "random", "loo")
DATASETS = ("synthetic", "ml-100k", "ml-1m")


def ratings_from_rows(rows: np.ndarray, name: str, rating_scale: tuple[float, float]) -> Ratings:
    """Map raw (user, item, rating, timestamp) rows to 0-based contiguous ids."""
    user_ids, users = np.unique(rows[:, 0], return_inverse=True)
    item_ids, items = np.unique(rows[:, 1], return_inverse=True)
    return Ratings(
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        ratings=rows[:, 2].astype(np.float64),
        timestamps=rows[:, 3].astype(np.int64),
        n_users=user_ids.size,
        n_items=item_ids.size,
        user_ids=user_ids,
        item_ids=item_ids,
        rating_scale=rating_scale,
        name=name,
    )


def load_ratings(dataset: str, *, seed: int = 0, download: bool = True) -> Ratings:
    """All ratings of ``dataset`` (``synthetic``, ``ml-100k`` or ``ml-1m``)."""
    if dataset == "synthetic":
        return synthetic_ratings(seed=seed)
    if dataset in movielens.SPECS:
        return ratings_from_rows(movielens.read_file(dataset, download=download), dataset,
                                 movielens.rating_scale(dataset))
    raise ConfigError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def load_split(
    dataset: str,
    split: str = "u1",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    download: bool = True,
) -> Split:
    """Load ``dataset`` and split it.

    * ``u1``..``u5``, ``ua``, ``ub``: the GroupLens files (ML-100K only), ids mapped over
      base + test so both parts share them;
    * ``random``: a seeded holdout of ``test_fraction`` of all ratings;
    * ``loo``: leave-one-out by timestamp: each user's latest rating is the test set,
      the second latest the validation set (users with fewer than 3 ratings keep all
      in train). Ties in time are broken by item id.

    For ``synthetic`` the GroupLens names fall back to a seeded random holdout with the
    same 80/20 proportion (u1..u5) or 10 test ratings per user (ua, ub).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {SPLITS}")
    if split in GROUPLENS_SPLITS and dataset == "ml-100k":
        return _grouplens_split(split, download)
    if split in GROUPLENS_SPLITS and dataset != "synthetic":
        raise ConfigError(f"split {split!r} exists only for ml-100k; use 'random' or 'loo' for {dataset}")
    ratings = load_ratings(dataset, seed=seed, download=download)
    if split == "loo":
        return leave_one_out(ratings)
    if split in ("ua", "ub"):
        return per_user_holdout(ratings, 10, seed=seed, name=f"{dataset}:{split}")
    return random_holdout(ratings, test_fraction, seed=seed, name=f"{dataset}:{split}")


def _grouplens_split(split: str, download: bool) -> Split:
    base = movielens.read_file("ml-100k", f"{split}.base", download=download)
    test = movielens.read_file("ml-100k", f"{split}.test", download=download)
    both = ratings_from_rows(np.concatenate([base, test]), "ml-100k", movielens.rating_scale("ml-100k"))
    in_train = np.arange(len(both)) < base.shape[0]
    return Split(
        both.subset(in_train, f"ml-100k:{split}.base"),
        both.subset(~in_train, f"ml-100k:{split}.test"),
        None,
        f"ml-100k:{split}",
    )


def random_holdout(ratings: Ratings, test_fraction: float, *, seed: int, name: str) -> Split:
    """A seeded random holdout of ``test_fraction`` of the ratings."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(ratings))
    is_test = np.zeros(len(ratings), bool)
    is_test[order[: int(round(test_fraction * len(ratings)))]] = True
    return Split(ratings.subset(~is_test), ratings.subset(is_test), None, name)


def per_user_holdout(ratings: Ratings, per_user: int, *, seed: int, name: str) -> Split:
    """Hold out ``per_user`` random ratings of every user who has more than that."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(ratings), bool)
    for rows in ratings.rows_by_user():
        if rows.size > per_user:
            is_test[rng.choice(rows, per_user, replace=False)] = True
    return Split(ratings.subset(~is_test), ratings.subset(is_test), None, name)


def leave_one_out(ratings: Ratings) -> Split:
    """Latest rating per user = test, second latest = validation, the rest = train."""
    order = np.lexsort((ratings.items, ratings.timestamps, ratings.users))
    users = ratings.users[order]
    last = np.r_[users[1:] != users[:-1], True]
    second = np.r_[last[1:], False] & ~last
    counts = np.bincount(users, minlength=ratings.n_users)
    eligible = counts[users] >= 3
    part = np.zeros(len(ratings), np.int8)  # 0 train, 1 validation, 2 test
    part[order[last & eligible]] = 2
    part[order[second & eligible]] = 1
    return Split(
        ratings.subset(part == 0),
        ratings.subset(part == 2),
        ratings.subset(part == 1),
        f"{ratings.name}:loo",
    )

