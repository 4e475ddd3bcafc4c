"""A seeded synthetic rating generator shaped like MovieLens 100K (the offline default).

Ratings follow a low-rank model plus noise, mapped to MovieLens' whole-star scale
(``RATING_SCALE`` = 1..5):

    s_ij = mu + b_i + c_j + <p_i, q_j> + eps_ij,    r_ij = clip(round(s_ij), 1, 5)

with p_i, q_j ~ N(0, sigma^2 / rank) in R^rank, user and item biases b_i, c_j and
Gaussian noise eps_ij. Each user rates a heavy-tailed number of items (at least
``min_per_user``), drawn without replacement with Zipf-like item popularity, so the
defaults give MovieLens-100K's 943 users, 1,682 items and about 100,000 ratings.
numpy's generator is fine here: this is data, not key material.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .ratings import Ratings

RATING_SCALE = (1.0, 5.0)


def synthetic_ratings(
    n_users: int = 943,
    n_items: int = 1682,
    density: float = 100_000 / (943 * 1682),
    rank: int = 5,
    noise: float = 0.5,
    min_per_user: int = 20,
    seed: int = 0,
) -> Ratings:
    """Generate a seeded low-rank + noise rating set on ``RATING_SCALE``."""
    if n_users < 1 or n_items < 2 or rank < 1:
        raise ConfigError(f"need n_users >= 1, n_items >= 2, rank >= 1; got {n_users}, {n_items}, {rank}")
    if not 0 < density <= 1:
        raise ConfigError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    counts = _ratings_per_user(rng, n_users, n_items, density, min(min_per_user, n_items))
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = popularity[rng.permutation(n_items)]
    popularity /= popularity.sum()
    users = np.repeat(np.arange(n_users), counts)
    items = np.concatenate(
        [rng.choice(n_items, size=k, replace=False, p=popularity) for k in counts]
    )
    p = rng.normal(0, 1 / np.sqrt(rank), (n_users, rank))
    q = rng.normal(0, 1 / np.sqrt(rank), (n_items, rank))
    b = rng.normal(0, 0.4, n_users)
    c = rng.normal(0, 0.4, n_items)
    score = 3.5 + b[users] + c[items] + np.einsum("ij,ij->i", p[users], q[items])
    score += rng.normal(0, noise, users.size)
    ratings = np.clip(np.rint(score), *RATING_SCALE)
    timestamps = 874_724_710 + np.sort(rng.integers(0, 10**7, users.size))
    timestamps = timestamps[rng.permutation(users.size)]
    return Ratings(
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        ratings=ratings.astype(np.float64),
        timestamps=timestamps.astype(np.int64),
        n_users=n_users,
        n_items=n_items,
        user_ids=np.arange(1, n_users + 1),
        item_ids=np.arange(1, n_items + 1),
        rating_scale=RATING_SCALE,
        name=f"synthetic(seed={seed})",
    )


def _ratings_per_user(rng, n_users, n_items, density, floor) -> np.ndarray:
    """Heavy-tailed per-user counts summing to about density * n_users * n_items."""
    target = density * n_users * n_items
    raw = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    extra = max(target - floor * n_users, 0.0)
    counts = floor + np.floor(raw / raw.sum() * extra).astype(np.int64)
    return np.minimum(counts, n_items)
