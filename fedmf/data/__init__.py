"""Datasets: MovieLens 100K / 1M loaders, splits, and the seeded synthetic generator."""

from .movielens import cache_dir, locate
from .ratings import Ratings, Split
from .splits import DATASETS, SPLITS, leave_one_out, load_ratings, load_split, random_holdout
from .synthetic import synthetic_ratings

__all__ = [
    "DATASETS",
    "SPLITS",
    "Ratings",
    "Split",
    "cache_dir",
    "leave_one_out",
    "load_ratings",
    "load_split",
    "locate",
    "random_holdout",
    "synthetic_ratings",
]
