"""Public item features: MovieLens' genre flags (public metadata, not ratings)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .movielens import locate
from .ratings import Split


def item_genres(dataset: str, split: Split) -> np.ndarray:
    """Public item features: the MovieLens genre flags, one row per item of ``split``."""
    if dataset == "ml-100k":
        lines = (locate("ml-100k") / "u.item").read_text(encoding="latin-1").splitlines()
        table = {int(f[0]): [float(v) for v in f[5:24]] for f in (ln.split("|") for ln in lines if ln)}
    elif dataset == "ml-1m":
        lines = (locate("ml-1m") / "movies.dat").read_text(encoding="latin-1").splitlines()
        rows = [ln.split("::") for ln in lines if ln]
        names = sorted({g for r in rows for g in r[2].split("|")})
        table = {int(r[0]): [float(g in r[2].split("|")) for g in names] for r in rows}
    else:
        raise ConfigError(f"no public item features for dataset {dataset!r}: use a local model without item features (bias or mf)")
    return np.array([table[int(i)] for i in split.train.item_ids])
