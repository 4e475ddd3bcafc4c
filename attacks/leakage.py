"""How much a server learns about true ratings from recovered masked targets.

:func:`leakage` scores the de-masking estimators of :mod:`attacks.demask` by the
fraction of ratings recovered exactly (``exact_fraction``, after rounding and clipping
to the rating scale) and by RMSE, against the no-knowledge guess (the public mean
mu_pub for every rating), taking the best estimator for each metric separately (judged
with the truth: an upper bound on a real server, which must pick one without it).

:func:`oracle_leakage` is a pessimistic reference, not a server capability: the Bayes
estimate when the server is also handed the user's private local model f and scale s
and knows the noise law; :func:`mask_leakage` reports both over all users.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedmf.errors import ConfigError
from fedmf.masked import AUDIT_METRICS, MaskDesign, MaskedSplit

from .demask import PublicPrior, e_step, estimates


@dataclass(frozen=True)
class Leakage:
    """How well the server's best estimates recover one user's true ratings, vs the guess.

    ``exact_fraction`` is the best estimator's under the exact metric (``estimator``),
    ``rmse`` the best one's under RMSE (``rmse_estimator``); ``per_estimator`` holds
    (exact, rmse) of every estimator.
    """

    n: int
    exact_fraction: float
    rmse: float
    guess_exact_fraction: float
    guess_rmse: float
    estimator: str
    rmse_estimator: str = ""
    per_estimator: dict[str, tuple[float, float]] = field(default_factory=dict)

    def advantage(self, metric: str = "exact") -> float:
        """Attack minus guess: exact fractions, or guess RMSE minus attack RMSE."""
        if metric not in AUDIT_METRICS:
            raise ConfigError(f"metric must be one of {AUDIT_METRICS}, got {metric!r}")
        if metric == "exact":
            return self.exact_fraction - self.guess_exact_fraction
        return self.guess_rmse - self.rmse


def leakage(true: np.ndarray, recovered: np.ndarray, prior: PublicPrior,
            design: MaskDesign | None = None, items: np.ndarray | None = None, *,
            stop_above: float | None = None, stop_metrics: tuple[str, ...] = AUDIT_METRICS) -> Leakage:
    """Score every de-masking estimator, and keep the best one per metric (ties broken
    by the other metric; judged with the truth: an upper bound on a server that must
    pick one without it). ``design`` and the user's ``items`` enable the design-aware
    estimators. With ``stop_above``, stop (cheapest estimators first) as soon as the
    advantage under one of ``stop_metrics`` exceeds it: enough for an audit that
    encrypts then (the other metric's figure may then be an underestimate)."""
    lo, hi = prior.rating_scale
    guess = np.full(true.shape, prior.mean)

    def score(est):
        rounded = np.clip(np.rint(est), lo, hi)
        return float(np.mean(rounded == true)), float(np.sqrt(np.mean((np.clip(est, lo, hi) - true) ** 2)))

    g_exact, g_rmse = score(guess)
    design = design or MaskDesign()
    basis = design.basis(items) if items is not None else None
    scores = {}
    for name, est in estimates(recovered, prior, 0.2, basis, design.noise_sigma, design.scale_range):
        scores[name] = exact, err = score(est)
        advantage = {"exact": exact - g_exact, "rmse": g_rmse - err}
        if stop_above is not None and max(advantage[m] for m in stop_metrics) > stop_above:
            break
    by_exact = max(scores, key=lambda k: (scores[k][0], -scores[k][1]))
    by_rmse = max(scores, key=lambda k: (-scores[k][1], scores[k][0]))
    return Leakage(true.size, scores[by_exact][0], scores[by_rmse][1], g_exact, g_rmse,
                   by_exact, by_rmse, scores)


def oracle_leakage(true: np.ndarray, recovered: np.ndarray, clean_mask: np.ndarray,
                   prior: PublicPrior, noise_sigma: float, scale: float = 1.0) -> Leakage:
    """A pessimistic reference for a server that recovered r~ = s (r - f) - eta: the
    Bayes estimate (global histogram prior) when the server is also handed the user's
    private local model f (the clean mask) and scale s (1 without :class:`PrivateScale`)
    and knows the noise law eta ~ N(0, sigma^2), from r~ / s + f = r - eta / s: MAP for
    the exact metric, posterior mean for RMSE. It does not depend on how clever the
    de-masking estimators are at fitting f and s. It is not an upper bound on every
    server once the noise dominates: it uses f only through r~ / s + f, not as a prior
    (f, the user's own model of its ratings, is private and itself beats the guess)."""
    levels = prior.levels
    post, _ = e_step(recovered / scale + clean_mask, np.log(prior.histogram + 1e-12), levels,
                     float(np.hypot(noise_sigma / scale, 1e-3)))
    lo, hi = prior.rating_scale
    guess = np.full(true.shape, prior.mean)
    exact = float(np.mean(levels[np.argmax(post, axis=1)] == true))
    err = float(np.sqrt(np.mean((post @ levels - true) ** 2)))
    g_exact = float(np.mean(np.clip(np.rint(guess), lo, hi) == true))
    g_rmse = float(np.sqrt(np.mean((guess - true) ** 2)))
    return Leakage(true.size, exact, err, g_exact, g_rmse, "oracle_map", "oracle_mean",
                   {"oracle": (exact, err)})


def mask_leakage(masked: MaskedSplit, true_train: np.ndarray, prior: PublicPrior,
                 margin: float, more_margins: tuple[float, ...] = ()) -> dict[str, object]:
    """Leakage of every user's masked targets r~ (what the two-round attack recovers,
    exactly, from plaintext uploads: ``masked_targets_rmse`` of :func:`attack_masked_uploads`),
    scored with the design-aware estimators and with the :func:`oracle_leakage` reference.

    ``fraction_within_margin``: users whose advantage is <= ``margin`` under exact AND
    RMSE (who would pass the self-audit before their first plaintext pair); the
    ``_exact_only`` variant is the old single-metric audit; ``fraction_within`` repeats
    the first for ``margin`` and each of ``more_margins``. Pooled over ratings.
    """
    margins = (margin, *more_margins)
    train = masked.split.train
    out = {}
    for name in ("estimators", "oracle"):
        n = exact = sq = g_exact = g_sq = 0.0
        within_exact = users = 0
        within = dict.fromkeys(margins, 0)
        for u, rows in enumerate(train.rows_by_user()):
            if rows.size == 0:
                continue
            true, rec = true_train[rows], train.ratings[rows]
            score = (leakage(true, rec, prior, masked.design, train.items[rows]) if name == "estimators"
                     else oracle_leakage(true, rec, masked.clean_train_mask[rows], prior,
                                         masked.design.noise_sigma, masked.masks[u].private_scale))
            users += 1
            n += rows.size
            exact += score.exact_fraction * rows.size
            sq += score.rmse**2 * rows.size
            g_exact += score.guess_exact_fraction * rows.size
            g_sq += score.guess_rmse**2 * rows.size
            worst = max(score.advantage("exact"), score.advantage("rmse"))
            for m in margins:
                within[m] += worst <= m
            within_exact += score.advantage("exact") <= margin
        out[name] = {"users": users, "exact_fraction": exact / n, "rmse": float(np.sqrt(sq / n)),
                     "guess_exact_fraction": g_exact / n, "guess_rmse": float(np.sqrt(g_sq / n)),
                     "fraction_within_margin": within[margin] / users,
                     "fraction_within_margin_exact_only": within_exact / users,
                     "fraction_within": {str(m): within[m] / users for m in margins}}
    out["margin"] = margin
    return out
