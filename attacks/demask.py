"""De-masking: a server's estimates of true ratings from recovered masked targets r~.

On plaintext uploads of masked FedMF (:mod:`fedmf.masked`) the gradient-leakage attack
(:mod:`attacks.gradient_leakage`) recovers r~ = r - m exactly. The server's estimate of
the true ratings r then uses only public knowledge, including the mask design itself
(:class:`fedmf.masked.MaskDesign`: which public features the local model regresses on,
the noise level, the range of a private scale; Kerckhoffs: the code is public):

* ``recovered``: r~ itself (a server unaware of the mask);
* ``public_mean``: r~ + mu_pub (the mask is centred on the user's mean; mu_pub is the
  public global mean rating);
* ``integer_snap``: r~ + c with the shift c that makes r~ + c most likely under the
  public rating histogram on the integer scale (maximum likelihood over a 0.01 grid,
  then refined to the mean distance to the nearest integers): it undoes any constant
  per-user mask, using only that ratings are integers;
* ``em_*`` (``_map`` for the exact metric, ``_mean`` for RMSE): the mask family's private
  parameters fitted by expectation-maximisation. Model: r_j on the integer levels of the
  rating scale with the public histogram as prior, r_j = r~_j + <B_j, w> + eta_j,
  eta ~ N(0, sigma^2 + 0.05^2), with B the design's public basis (``em_shift``:
  intercept only; ``em_basis``: intercept + the public features of the user's items) and
  sigma the public noise level. E-step: posterior over each r_j; M-step: w by least
  squares on the posterior means; started from the best shifts of the grid, the
  highest-likelihood fit wins. With sigma = 0 it snaps ridge masks on public features to
  the integer grid (each genre combination is one constant to undo), not only constant
  ones; ``em_scale`` (scaled designs) adds r~ itself to the basis, r = a r~ + <B, w>,
  which undoes a private residual scale.

Scoring these estimates against the truth is :mod:`attacks.leakage`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmf.errors import ConfigError


@dataclass(frozen=True)
class PublicPrior:
    """What any server knows about ratings: the global mean and the rating histogram."""

    mean: float
    histogram: np.ndarray  # P(r = k) for each integer level k of the rating scale
    #: (lowest, highest) rating of the dataset (:attr:`fedmf.data.Ratings.rating_scale`)
    rating_scale: tuple[float, float]

    def __post_init__(self) -> None:
        if self.histogram.shape != self.levels.shape:
            raise ConfigError(f"histogram has {self.histogram.size} entries, the rating scale "
                             f"{self.rating_scale} has {self.levels.size} integer levels")

    @property
    def levels(self) -> np.ndarray:
        """The integer ratings lo, lo + 1, ..., hi of the scale."""
        lo, hi = self.rating_scale
        return np.arange(lo, hi + 1, dtype=np.float64)

    @classmethod
    def from_ratings(cls, ratings: np.ndarray, rating_scale: tuple[float, float]) -> PublicPrior:
        """Mean and histogram of ``ratings`` on the integer levels of ``rating_scale``."""
        lo, hi = rating_scale
        levels = np.arange(lo, hi + 1)
        hist = np.array([(np.rint(ratings) == k).mean() for k in levels])
        return cls(float(ratings.mean()), hist / hist.sum(), (float(lo), float(hi)))

SHIFT_GRID = np.arange(-250, 251) * 0.01
EM_FLOOR = 0.05  # noise floor of the EM model: keeps the E-step finite at sigma = 0


def demask(recovered: np.ndarray, prior: PublicPrior, *, sigma: float = 0.2,
           basis: np.ndarray | None = None, noise_sigma: float = 0.0,
           scale_range: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """The server's public-knowledge estimates of r from recovered masked targets r~
    (see the module docstring). ``basis``: the mask design's public basis for these
    ratings (intercept first); ``noise_sigma``: the design's private noise level;
    ``scale_range``: the design shrinks residuals by a private scale s in this public
    range (adds ``em_scale``, with 1/s constrained to the range)."""
    return dict(estimates(recovered, prior, sigma, basis, noise_sigma, scale_range))


def estimates(recovered, prior, sigma, basis, noise_sigma, scale_range):
    """(name, estimate) pairs of :func:`demask`, cheapest first."""
    centre = prior.mean - recovered.mean()
    shifts = centre + SHIFT_GRID
    like = _shift_likelihood(recovered, shifts, prior, sigma)
    snapped = recovered + shifts[int(np.argmax(like))]
    snapped += np.mean(np.rint(snapped) - snapped)  # refine below the grid step
    yield "recovered", recovered
    yield "public_mean", recovered + prior.mean
    yield "integer_snap", snapped
    bases = {"em_shift": np.ones((recovered.size, 1))}
    if basis is not None and basis.shape[1] > 1:
        bases["em_basis"] = basis
    scale = float(np.hypot(noise_sigma, EM_FLOOR))
    shift_starts = _best_shifts(recovered, shifts, prior, scale)
    for name, B in bases.items():
        starts = [np.r_[c, np.zeros(B.shape[1] - 1)] for c in shift_starts]
        post = _em_posterior(recovered, B, prior, scale, starts)
        yield from _posterior_estimates(name, post, prior.levels)
    if scale_range is not None:
        B = np.hstack([bases.get("em_basis", bases["em_shift"]), recovered[:, None]])
        starts = []
        bounds = (1.0 / scale_range[1], 1.0 / scale_range[0])
        for a in np.geomspace(*bounds, 5):  # r = a r~ + <B, w>: the last coefficient is a - 1
            z = a * recovered
            for c in _best_shifts(z, prior.mean - z.mean() + SHIFT_GRID, prior, scale):
                starts.append(np.r_[c, np.zeros(B.shape[1] - 2), a - 1.0])
        post = _em_posterior(recovered, B, prior, scale, starts, scaled=(noise_sigma, bounds))
        yield from _posterior_estimates("em_scale", post, prior.levels)


def _posterior_estimates(name, post, levels):
    yield f"{name}_map", levels[np.argmax(post, axis=1)]
    yield f"{name}_mean", post @ levels


def _shift_likelihood(recovered, shifts, prior, scale):
    """log-likelihood of r~ + c under the histogram blurred by N(0, scale^2), per shift c."""
    x = recovered[None, :, None] + shifts[:, None, None] - prior.levels[None, None, :]
    return np.log(np.exp(-0.5 * (x / scale) ** 2) @ prior.histogram + 1e-300).sum(axis=1)


def _best_shifts(recovered, shifts, prior, scale, k: int = 2, modes: int = 4) -> np.ndarray:
    """EM starting points: the ``k`` most likely local maxima of the shift likelihood,
    and the ``modes`` most frequent fractional parts of -r~ shared by >= 2 ratings (a
    mask constant on a group of ratings, e.g. one genre combination, gives that group
    one exact fractional part), each placed at the integer nearest the grid's best shift."""
    like = _shift_likelihood(recovered, shifts, prior, max(scale, 0.2))
    peaks = np.flatnonzero((like >= np.roll(like, 1)) & (like >= np.roll(like, -1)))
    starts = list(shifts[peaks[np.argsort(like[peaks])[::-1][:k]]])
    frac, counts = np.unique(np.round(np.mod(-recovered, 1.0), 6), return_counts=True)
    centre = starts[0] if starts else 0.0
    for f in frac[np.argsort(counts)[::-1][:modes]][counts[np.argsort(counts)[::-1][:modes]] >= 2]:
        starts.append(f + np.round(centre - f))
    return np.array(starts)


def _em_posterior(y, B, prior, scale, starts, iters: int = 40, ridge: float = 1e-6,
                  scaled: tuple[float, tuple[float, float]] | None = None) -> np.ndarray:
    """EM for r_j = y_j + <B_j, w> + N(0, scale^2), r_j on the prior's levels with its histogram;
    returns the (n, 5) posterior of the best-likelihood start (``starts``: initial w;
    M-step: least squares on the posterior means, ``ridge`` on the non-intercept
    coefficients). ``scaled`` = (sigma, (a_min, a_max)) marks a scaled design: the last
    column of B is y itself with coefficient a - 1 (a = 1/s, kept in the public range),
    the noise in rating units is a sigma, and the E-step's scale follows the current a."""
    if scaled is None:
        noise = lambda w: scale  # noqa: E731
    else:
        sigma, (a_min, a_max) = scaled
        noise = lambda w: float(np.hypot(sigma * (1.0 + w[-1]), EM_FLOOR))  # noqa: E731
    log_prior, levels = np.log(prior.histogram + 1e-12), prior.levels
    penalty = ridge * np.eye(B.shape[1])
    penalty[0, 0] = 1e-9
    gram = B.T @ B + penalty
    best = (-np.inf, None)
    for w0 in starts:
        w = np.array(w0, dtype=np.float64)
        for _ in range(iters):
            post, loglik = e_step(y + B @ w, log_prior, levels, noise(w))
            w_new = np.linalg.solve(gram, B.T @ (post @ levels - y))
            if scaled is not None:
                w_new[-1] = np.clip(w_new[-1], a_min - 1.0, a_max - 1.0)
            if np.allclose(w_new, w, atol=1e-9):
                break
            w = w_new
        post, loglik = e_step(y + B @ w, log_prior, levels, noise(w))
        if loglik > best[0]:
            best = (loglik, post)
    return best[1]


def e_step(z, log_prior, levels, scale):
    """Posterior over ``levels`` of each r_j given z_j = r_j + N(0, scale^2), and the log-likelihood."""
    log_p = log_prior - 0.5 * ((levels - z[:, None]) / scale) ** 2
    top = log_p.max(axis=1, keepdims=True)
    post = np.exp(log_p - top)
    norm = post.sum(axis=1, keepdims=True)
    return post / norm, float(np.sum(top[:, 0] + np.log(norm[:, 0])))
