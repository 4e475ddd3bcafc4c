"""Datasets: MovieLens 100K / 1M loaders, explicit and implicit splits, the seeded synthetic generator."""

from .implicit import IMPLICIT_SPLITS, ImplicitSplit, holdout_split, load_implicit, loo_split
from .movielens import cache_dir, locate
from .ratings import Ratings, Split
from .splits import DATASETS, SPLITS, leave_one_out, load_ratings, load_split, random_holdout
from .synthetic import synthetic_ratings

__all__ = [
    "DATASETS",
    "IMPLICIT_SPLITS",
    "ImplicitSplit",
    "SPLITS",
    "Ratings",
    "Split",
    "cache_dir",
    "holdout_split",
    "load_implicit",
    "loo_split",
    "leave_one_out",
    "load_ratings",
    "load_split",
    "locate",
    "random_holdout",
    "synthetic_ratings",
]
