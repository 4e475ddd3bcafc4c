"""Ranking metrics for implicit feedback, vectorised over users.

Sampled (leave-one-out, the PFedRec code's ``metrics.py``; fcf_pfedrec_personalfr.md §2.3):
the held-out item i_u is ranked among itself and its sampled negatives N_u with
pessimistic tie-breaking (a negative scoring the same as i_u ranks above it):

    rank_u = 1 + |{j in N_u : s_uj >= s_u,i_u}|
    HR@K   = mean_u [rank_u <= K]
    NDCG@K = mean_u [rank_u <= K] * log 2 / log(1 + rank_u)

Full ranking: every item except the user's training items is scored; T_u is the top K
(ties at equal score in numpy's argpartition / stable-sort order), R_u the user's
held-out items, and only users with R_u non-empty are averaged:

    Precision@K = |T_u ∩ R_u| / K
    Recall@K    = |T_u ∩ R_u| / |R_u|
    AP@K        = sum_{k<=K} Precision@k(u) [t_k in R_u] / min(K, |R_u|)   (MAP@K: mean)

(the normalisation min(K, |R_u|) is the one the ``implicit`` library uses).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .data.implicit import ImplicitSplit
from .errors import ConfigError

#: scores(users) -> (len(users), n_items) array of the model's scores for those users
ScoreFunction = Callable[[np.ndarray], np.ndarray]


def _finite(scores: np.ndarray, what: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise ConfigError(f"{what} contain NaN or inf; the model diverged or was fed bad input")
    return scores


def sampled_ranks(positive: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """1-based rank of each held-out item among its negatives, ties counted against it."""
    positive = _finite(positive, "positive scores")
    negatives = _finite(negatives, "negative scores")
    if negatives.ndim != 2 or positive.shape != (negatives.shape[0],):
        raise ConfigError(
            f"need positive scores of shape (n,) and negatives (n, m); got {positive.shape} "
            f"and {negatives.shape}"
        )
    return 1 + np.count_nonzero(negatives >= positive[:, None], axis=1)


def hit_ratio_at_k(ranks: np.ndarray, k: int) -> float:
    """HR@K = mean [rank <= K]."""
    return float(np.mean(np.asarray(ranks) <= k)) if len(ranks) else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """NDCG@K with one relevant item = mean [rank <= K] log 2 / log(1 + rank)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks <= k, np.log(2.0) / np.log1p(ranks), 0.0)))


def top_k(scores: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> np.ndarray:
    """The K best items per row, best first; ``exclude[r]`` lists items row r may not return."""
    scores = _finite(scores, "scores").copy()
    n, m = scores.shape
    if not 1 <= k <= m:
        raise ConfigError(f"k must be in 1..{m} (the number of items), got {k}")
    if exclude is not None:
        rows = np.repeat(np.arange(n), [e.size for e in exclude])
        scores[rows, np.concatenate(exclude) if rows.size else np.zeros(0, np.int64)] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def full_ranking_metrics(top: np.ndarray, relevant: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-row Precision@K, Recall@K and AP@K of ``top`` (n x K) against ``relevant`` sets."""
    n, k = top.shape
    sizes = np.array([r.size for r in relevant])
    if np.any(sizes == 0):
        raise ConfigError("every evaluated user needs at least one relevant item")
    rows = np.repeat(np.arange(n), sizes)
    cols = np.concatenate(relevant) if n else np.zeros(0, np.int64)
    width = int(max(top.max(initial=0), cols.max(initial=0))) + 1
    is_relevant = np.zeros((n, width), bool)
    is_relevant[rows, cols] = True
    hits = np.take_along_axis(is_relevant, top, axis=1)
    cum_hits = np.cumsum(hits, axis=1)
    precision_at = cum_hits / np.arange(1, k + 1)
    return {
        "precision": cum_hits[:, -1] / k,
        "recall": cum_hits[:, -1] / sizes,
        "ap": (precision_at * hits).sum(axis=1) / np.minimum(k, sizes),
    }


def evaluate_ranking(
    scores: ScoreFunction, split: ImplicitSplit, part: str = "test", *, k: int = 10, batch: int = 512,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of ``part`` (``"val"`` or ``"test"``) for a model given by ``scores``.

    Keys: ``hr_at_K``, ``ndcg_at_K`` (only when the split has sampled negatives),
    ``precision_at_K``, ``recall_at_K``, ``map_at_K``: fractions in [0, 1], averaged over
    the users with held-out items (of ``users`` only, when given: a device's own users).
    Users are scored ``batch`` at a time (bounded memory).
    """
    indptr, indices, negatives = split.part(part)
    held_out = np.flatnonzero(np.diff(indptr))
    users = held_out if users is None else np.intersect1d(held_out, users)
    ranks, precision, recall, ap = [], [], [], []
    for start in range(0, users.size, batch):
        chunk = users[start : start + batch]
        s = _finite(scores(chunk), "scores")
        if s.shape != (chunk.size, split.n_items):
            raise ConfigError(f"score function returned shape {s.shape}, expected {(chunk.size, split.n_items)}")
        held = [indices[indptr[u] : indptr[u + 1]] for u in chunk]
        if negatives is not None:
            pos = s[np.arange(chunk.size), [h[0] for h in held]]
            ranks.append(sampled_ranks(pos, np.take_along_axis(s, negatives[chunk], axis=1)))
        top = top_k(s, k, [split.train_items(u) for u in chunk])
        per_user = full_ranking_metrics(top, held)
        precision.append(per_user["precision"])
        recall.append(per_user["recall"])
        ap.append(per_user["ap"])
    out = {}
    if negatives is not None:
        r = np.concatenate(ranks) if ranks else np.zeros(0)
        out[f"hr_at_{k}"] = hit_ratio_at_k(r, k)
        out[f"ndcg_at_{k}"] = ndcg_at_k(r, k)
    mean = lambda parts: float(np.mean(np.concatenate(parts))) if parts else 0.0
    out[f"precision_at_{k}"] = mean(precision)
    out[f"recall_at_{k}"] = mean(recall)
    out[f"map_at_{k}"] = mean(ap)
    return out
