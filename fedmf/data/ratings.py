"""Rating containers shared by every loader, split and trainer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ratings:
    """Explicit ratings as parallel arrays, with 0-based contiguous user and item ids.

    ``user_ids[u]`` / ``item_ids[j]`` give the dataset's original id of user ``u`` /
    item ``j``; all parts of one split share the same mapping and the same
    ``n_users`` and ``n_items``. ``rating_scale`` = (lowest, highest) rating the dataset
    allows (MovieLens: 1..5 stars); models clip predictions and attacks round to it.
    """

    users: np.ndarray  # int64, 0..n_users-1
    items: np.ndarray  # int64, 0..n_items-1
    ratings: np.ndarray  # float64
    timestamps: np.ndarray  # int64
    n_users: int
    n_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    rating_scale: tuple[float, float]
    name: str = ""

    def __len__(self) -> int:
        return int(self.ratings.shape[0])

    def subset(self, mask: np.ndarray, name: str | None = None) -> Ratings:
        """The rows selected by a boolean ``mask``, keeping the id mapping."""
        return Ratings(
            self.users[mask],
            self.items[mask],
            self.ratings[mask],
            self.timestamps[mask],
            self.n_users,
            self.n_items,
            self.user_ids,
            self.item_ids,
            self.rating_scale,
            self.name if name is None else name,
        )

    def rows_by_user(self) -> list[np.ndarray]:
        """Row indices of each user's ratings, in time order (ties by item id)."""
        order = np.lexsort((self.items, self.timestamps, self.users))
        bounds = np.searchsorted(self.users[order], np.arange(self.n_users + 1))
        return [order[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]

    def stats(self) -> dict[str, float]:
        """Counts, density and rating moments, as printed by ``fedmf data``."""
        observed_users = np.unique(self.users).size
        observed_items = np.unique(self.items).size
        return {
            "users": int(self.n_users),
            "items": int(self.n_items),
            "ratings": len(self),
            "users_with_ratings": int(observed_users),
            "items_with_ratings": int(observed_items),
            "density": len(self) / float(self.n_users * self.n_items),
            "rating_mean": float(self.ratings.mean()) if len(self) else float("nan"),
            "rating_std": float(self.ratings.std()) if len(self) else float("nan"),
            "rating_min": float(self.ratings.min()) if len(self) else float("nan"),
            "rating_max": float(self.ratings.max()) if len(self) else float("nan"),
        }


@dataclass(frozen=True)
class Split:
    """A train / test (/ validation) split over one id mapping."""

    train: Ratings
    test: Ratings
    validation: Ratings | None
    name: str
