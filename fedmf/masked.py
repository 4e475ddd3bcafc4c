"""FedMF on personally masked targets (our reading of FedMMF, Yang et al. 2022 [R]).

Each user fits a local model on its own training ratings only
(:mod:`secagg.personal_mask`); the mask of rating (i, j) is that model's prediction
m_ij. FedMF then runs unchanged on the masked targets r~_ij = r_ij - m_ij (the public
statistics mu and n_j of its setup aggregation are computed from them), and the device
predicts  r^_ij = m_ij + mu + <u'_i, v'_j>, clipped to 1..5. The mask never leaves the
device. This is our reconstruction from the paper's abstract, not the paper's text.

Private parts of a mask. A mask that is a function of a few private numbers (the user's
mean, ridge weights on public genres, a private residual scale s with r~ = s (r - f))
is undone on integer ratings by fitting those numbers so that the recovered r~ lands on
the integer grid (estimators below). What the server cannot fit is an item-varying
private part: ``noise_sigma`` > 0 adds a private Gaussian draw (``os.urandom``, fixed
for the run) to the mask of every training rating (:class:`secagg.personal_mask.PrivateNoise`);
with ``selective_noise`` only users whom the noise lets pass the audit keep it
(:func:`keep_noise_where_it_passes`; the others are encrypted anyway). With ``refit``,
each device re-solves its private user vector and bias on the *denoised* targets r - f
(ridge, the final item matrix) before predicting: local post-processing that removes
the noise from the user's own parameters (the shared item matrix keeps what it learnt).
With ``mask_scale`` = (low, high) as well, a passing user's masked targets are
s (r - f) - eta with a small private s: the noise is small in the units the model trains
on (no divergence, little harm) but large, sigma / s, in rating units.
Measured on ML-100K u1 (``bench/fedmmf_adaptive.py``): noise on every user small enough
to keep test RMSE within +0.005 of plain FedMF lets almost no user pass a 0.05 audit
margin. Selective scale + noise lets about a fifth of the users pass at no measurable
accuracy cost, because those users then contribute almost nothing to the shared model:
whatever in r~ the federated model can learn from, the server (who recovers r~ exactly)
can use too, so a plaintext upload that leaks nothing beyond the margin also teaches
little, and the accuracy budget caps how many users can send one.

Leakage, measured not claimed. A server holding plaintext uploads runs the
gradient-leakage attack (:mod:`attacks.gradient_leakage`); on masked uploads it
recovers r~ = r - m exactly. Its estimate of the true ratings r is then the best of
these estimators (:func:`demask`), which use only public knowledge, including the mask
design itself (:class:`MaskDesign`: which public features the local model regresses on,
and the noise level; Kerckhoffs: the code is public):

* ``recovered``: r~ itself (a server unaware of the mask);
* ``public_mean``: r~ + mu_pub (the mask is centred on the user's mean; mu_pub is the
  public global mean rating);
* ``integer_snap``: r~ + c with the shift c that makes r~ + c most likely under the
  public rating histogram on the integer scale (maximum likelihood over a 0.01 grid,
  then refined to the mean distance to the nearest integers): it undoes any constant
  per-user mask, using only that ratings are integers;
* ``em_*`` (``_map`` for the exact metric, ``_mean`` for RMSE): the mask family's private
  parameters fitted by expectation-maximisation. Model: r_j in 1..5 with the public
  histogram as prior, r_j = r~_j + <B_j, w> + eta_j, eta ~ N(0, sigma^2 + 0.05^2) with
  B the design's public basis (``em_shift``: intercept only; ``em_basis``: intercept +
  the public features of the user's items) and sigma the public noise level. E-step:
  posterior over each r_j; M-step: w by least squares on the posterior means; started
  from the best shifts of the grid, the highest-likelihood fit wins. With sigma = 0 it
  snaps ridge masks on public features to the integer grid (each genre combination is
  one constant to undo), not only constant ones; ``em_scale`` (scaled designs) adds r~
  itself to the basis, r = a r~ + <B, w>, which undoes a private residual scale.

:func:`oracle_leakage` is a pessimistic reference, not a server capability: the Bayes
estimate when the server is also handed the user's private local model f and scale s
and knows the noise law; :func:`mask_leakage` reports both over all users.

The no-knowledge guess is mu_pub for every rating. :func:`leakage` scores the estimators
by the fraction of ratings recovered exactly (``exact_fraction``, after rounding and
clipping to the scale) and by RMSE, against the guess, taking the best estimator for
each metric separately (judged with the truth: an upper bound on a real server).
:class:`RatingAuditor` is the self-audit behind :class:`secagg.adaptive.SelfAuditPolicy`:
before an upload leaves in clear, the user runs the attack on it and on its previous
plaintext upload (the pair the server would hold) and returns the best estimators'
advantage over the guess, per metric (default: exact AND RMSE, each must stay within the
margin); with no previous plaintext upload the two-round attack cannot run yet, and the
user scores its own masked targets r~ (what the attack recovers once a second plaintext
round follows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from secagg import make_backend
from secagg.adaptive import AdaptiveBackend, CountPolicy, Decision, FixedPolicy, SelfAuditPolicy
from secagg.personal_mask import (
    BiasModel,
    LocalMFModel,
    LocalModel,
    PersonalMask,
    PrivateNoise,
    PrivateScale,
    RidgeModel,
    fit_personal_mask,
)

from .data import Split, locate
from .errors import ConfigError
from .metrics import rmse
from .model import predict
from .trainer import FedMFTrainer

MASK_MODELS = ("ridge", "bias", "mf")
AUDIT_METRICS = ("exact", "rmse")
RATING_SCALE = (1, 5)


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
        raise ConfigError(f"no public item features for dataset {dataset!r}: use --mask-model bias or mf")
    return np.array([table[int(i)] for i in split.train.item_ids])


def local_model(kind: str, dataset: str, split: Split, *, alpha: float = 30.0) -> LocalModel:
    """The local model every user fits for its mask.

    ``ridge``: user mean + ridge regression (``alpha``) on the public genre flags;
    ``bias``: the user's mean rating; ``mf``: a small local MF with private item factors
    (one user's data: it mostly memorises, so the residual carries little signal).
    """
    if kind == "ridge":
        return RidgeModel(item_genres(dataset, split), alpha=alpha)
    if kind == "bias":
        return BiasModel()
    if kind == "mf":
        return _PerUserMF(LocalMFModel())
    raise ConfigError(f"unknown mask model {kind!r}; choose one of {MASK_MODELS}")


@dataclass(frozen=True)
class _PerUserMF:
    """A :class:`LocalMFModel` keyed by item only (the participant is one user: row 0)."""

    model: LocalMFModel

    def fit(self, x, y):
        predict = self.model.fit(np.column_stack([np.zeros_like(x), x]), y)
        return lambda items: predict(np.column_stack([np.zeros_like(items), items]))


@dataclass(frozen=True)
class MaskDesign:
    """What the server knows about the masks: the public basis the local models are
    linear in (``features``: the public item features of a ridge mask, None for masks
    with no public item structure) and the private noise level ``noise_sigma``."""

    features: np.ndarray | None = None
    noise_sigma: float = 0.0
    #: (low, high) of the private per-user residual scale s (PrivateScale); None: unscaled
    scale_range: tuple[float, float] | None = None

    def basis(self, items: np.ndarray) -> np.ndarray:
        """The (n, 1 + d) public basis for one user's rated ``items`` (intercept first)."""
        ones = np.ones((items.size, 1))
        return ones if self.features is None else np.hstack([ones, self.features[items]])


@dataclass
class MaskedSplit:
    """A split whose training ratings are the masked targets r - m, and the masks.

    ``test_offset[k]`` is the mask of test rating k (added to the federated prediction).
    ``clean_train_mask`` is the mask without its private noise (the device's denoised
    targets are r - clean_train_mask). Users without training ratings have no local
    model; their offset is the public midpoint of the rating scale.
    """

    split: Split
    masks: dict[int, PersonalMask]
    train_mask: np.ndarray
    test_offset: np.ndarray
    design: MaskDesign = field(default_factory=MaskDesign)
    clean_train_mask: np.ndarray | None = None

    @property
    def noisy_users(self) -> list[int]:
        """Users whose training mask differs from the clean one (private noise or scale)."""
        if self.clean_train_mask is None:
            return []
        rows = self.split.train.rows_by_user()
        return [u for u in self.masks if not np.array_equal(self.train_mask[rows[u]], self.clean_train_mask[rows[u]])]

    @property
    def fitted_counts(self) -> dict[int, int]:
        return {u: m.n_fitted for u, m in self.masks.items()}


def mask_split(split: Split, model: LocalModel, *, noise_sigma: float = 0.0,
               scale: tuple[float, float] | None = None, design: MaskDesign | None = None) -> MaskedSplit:
    """Fit every user's mask on its own training ratings and mask the training targets
    (with ``scale`` = (low, high), residuals shrunk by a private scale:
    :class:`PrivateScale`; with ``noise_sigma`` > 0, plus private noise: :class:`PrivateNoise`)."""
    train, test = split.train, split.test
    if scale is not None:
        model = PrivateScale(model, *scale)
    if noise_sigma > 0:
        model = PrivateNoise(model, noise_sigma)
    train_rows, test_rows = train.rows_by_user(), test.rows_by_user()
    train_mask, clean = np.zeros(len(train)), np.zeros(len(train))
    test_offset = np.full(len(test), float(sum(RATING_SCALE)) / 2)
    masks = {}
    for u in range(train.n_users):
        rows = train_rows[u]
        if rows.size == 0:
            continue
        mask = fit_personal_mask(model, train.items[rows], train.ratings[rows])
        masks[u] = mask
        train_mask[rows] = mask.values(train.items[rows])
        clean[rows] = mask.base_values(train.items[rows])
        test_offset[test_rows[u]] = mask.values(test.items[test_rows[u]])
    masked_train = replace(train, ratings=train.ratings - train_mask, name=f"{train.name} masked")
    design = replace(design or MaskDesign(), noise_sigma=float(noise_sigma),
                     scale_range=None if scale is None else (float(scale[0]), float(scale[1])))
    return MaskedSplit(Split(masked_train, test, split.validation, f"{split.name} masked"),
                       masks, train_mask, test_offset, design, clean)


def keep_noise_where_it_passes(clean: MaskedSplit, noisy: MaskedSplit, true_train: np.ndarray,
                               prior: PublicPrior, margin: float) -> tuple[MaskedSplit, np.ndarray]:
    """Per-user choice before training: keep the noisy mask only for users whose noisy
    masked targets pass the audit (advantage <= ``margin`` under exact and RMSE, for the
    de-masking estimators AND the :func:`oracle_leakage` reference); every other user keeps
    the clean mask (it fails the audit and is encrypted anyway, so noise would only cost
    accuracy). Returns the mixed split and the boolean per-user choice.

    Caveat [R]: the kept draws are selected (those the attacks do worst on); the audit
    scores the realised draw, but a server that models this selection could do better
    than estimators assuming an unconditional N(0, sigma^2) noise law.
    """
    train = clean.split.train
    keep = np.zeros(train.n_users, bool)
    ratings, offsets = clean.split.train.ratings.copy(), clean.train_mask.copy()
    masks = dict(clean.masks)
    for u, rows in enumerate(train.rows_by_user()):
        if rows.size == 0:
            continue
        y = noisy.split.train.ratings[rows]
        scores = (leakage(true_train[rows], y, prior, noisy.design, train.items[rows]),
                  oracle_leakage(true_train[rows], y, clean.clean_train_mask[rows], prior,
                                 noisy.design.noise_sigma, noisy.masks[u].private_scale))
        if max(sc.advantage(m) for sc in scores for m in AUDIT_METRICS) <= margin:
            keep[u] = True
            ratings[rows], offsets[rows], masks[u] = y, noisy.train_mask[rows], noisy.masks[u]
    mixed = MaskedSplit(Split(replace(train, ratings=ratings), clean.split.test, clean.split.validation,
                              f"{clean.split.name} selective noise"),
                        masks, offsets, clean.test_offset, noisy.design, clean.clean_train_mask)
    return mixed, keep


def mask_design(kind: str, dataset: str, split: Split) -> MaskDesign:
    """The public basis of a mask model (ridge: its public item features)."""
    return MaskDesign(item_genres(dataset, split)) if kind == "ridge" else MaskDesign()


def make_masks(split: Split, run: MaskedRunConfig, prior: PublicPrior) -> MaskedSplit:
    """The masks of a run: local model, private scale and noise; with ``selective_noise``
    the users the private parts do not let pass the audit keep the plain local model."""
    model = local_model(run.mask_model, run.dataset, split, alpha=run.mask_alpha)
    design = mask_design(run.mask_model, run.dataset, split)
    masked = mask_split(split, model, noise_sigma=run.mask_noise, scale=run.mask_scale, design=design)
    if run.selective_noise and run.mask_noise > 0:
        clean = mask_split(split, model, design=design)  # who fails is encrypted: plain f, no private parts
        masked, _ = keep_noise_where_it_passes(clean, masked, split.train.ratings, prior, run.audit_margin)
    return masked


def refit_private(trainer: FedMFTrainer, targets: np.ndarray) -> np.ndarray:
    """Device-side refit of every user's private coordinates (u_i, b_i) on ``targets``
    with the final item matrix: the minimiser of the local objective
    (1/n_i) sum_j (t_ij - mu - c_j - <u_i, v_j> - b_i)^2 + lambda |(u_i, b_i)|^2
    (a ridge solve). Returns the refitted user matrix; nothing is uploaded."""
    cfg, train, V = trainer.config, trainer.split.train, trainer.V
    U, free = trainer.U.copy(), cfg.user_mask
    for u in trainer.participants():
        rows = trainer.user_rows[u]
        Vr = V[train.items[rows]]
        X, y = Vr[:, free], targets[rows] - trainer.mu - Vr[:, ~free] @ U[u, ~free]
        n = rows.size
        U[u, free] = np.linalg.solve(X.T @ X / n + cfg.reg * np.eye(X.shape[1]), X.T @ y / n)
    return U


def test_rmse(trainer: FedMFTrainer, U: np.ndarray, offset: np.ndarray | float = 0.0) -> float:
    """Test RMSE of the model (mu + offset + <u'_i, v'_j>, clipped) with user matrix U."""
    test = trainer.split.test
    return rmse(predict(trainer.mu + offset, U, trainer.V, test.users, test.items), test.ratings)


# --------------------------------------------------------------------------- leakage


@dataclass(frozen=True)
class PublicPrior:
    """What any server knows about ratings: the global mean and the rating histogram."""

    mean: float
    histogram: np.ndarray  # P(r = k) for k = 1..5

    @classmethod
    def from_ratings(cls, ratings: np.ndarray) -> PublicPrior:
        levels = np.arange(RATING_SCALE[0], RATING_SCALE[1] + 1)
        hist = np.array([(np.rint(ratings) == k).mean() for k in levels])
        return cls(float(ratings.mean()), hist / hist.sum())


LEVELS = np.arange(RATING_SCALE[0], RATING_SCALE[1] + 1, dtype=np.float64)
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
    return dict(_estimates(recovered, prior, sigma, basis, noise_sigma, scale_range))


def _estimates(recovered, prior, sigma, basis, noise_sigma, scale_range):
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
        yield from _posterior_estimates(name, _em_posterior(recovered, B, prior, scale, starts))
    if scale_range is not None:
        B = np.hstack([bases.get("em_basis", bases["em_shift"]), recovered[:, None]])
        starts = []
        bounds = (1.0 / scale_range[1], 1.0 / scale_range[0])
        for a in np.geomspace(*bounds, 5):  # r = a r~ + <B, w>: the last coefficient is a - 1
            z = a * recovered
            for c in _best_shifts(z, prior.mean - z.mean() + SHIFT_GRID, prior, scale):
                starts.append(np.r_[c, np.zeros(B.shape[1] - 2), a - 1.0])
        yield from _posterior_estimates("em_scale", _em_posterior(recovered, B, prior, scale, starts,
                                                                  scaled=(noise_sigma, bounds)))


def _posterior_estimates(name, post):
    yield f"{name}_map", LEVELS[np.argmax(post, axis=1)]
    yield f"{name}_mean", post @ LEVELS


def _shift_likelihood(recovered, shifts, prior, scale):
    """log-likelihood of r~ + c under the histogram blurred by N(0, scale^2), per shift c."""
    x = recovered[None, :, None] + shifts[:, None, None] - LEVELS[None, None, :]
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
    """EM for r_j = y_j + <B_j, w> + N(0, scale^2), r_j in LEVELS with the public prior;
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
    log_prior = np.log(prior.histogram + 1e-12)
    penalty = ridge * np.eye(B.shape[1])
    penalty[0, 0] = 1e-9
    gram = B.T @ B + penalty
    best = (-np.inf, None)
    for w0 in starts:
        w = np.array(w0, dtype=np.float64)
        for _ in range(iters):
            post, loglik = _e_step(y + B @ w, log_prior, noise(w))
            w_new = np.linalg.solve(gram, B.T @ (post @ LEVELS - y))
            if scaled is not None:
                w_new[-1] = np.clip(w_new[-1], a_min - 1.0, a_max - 1.0)
            if np.allclose(w_new, w, atol=1e-9):
                break
            w = w_new
        post, loglik = _e_step(y + B @ w, log_prior, noise(w))
        if loglik > best[0]:
            best = (loglik, post)
    return best[1]


def _e_step(z, log_prior, scale):
    """Posterior over LEVELS of each r_j given z_j = r_j + N(0, scale^2), and the log-likelihood."""
    log_p = log_prior - 0.5 * ((LEVELS - z[:, None]) / scale) ** 2
    top = log_p.max(axis=1, keepdims=True)
    post = np.exp(log_p - top)
    norm = post.sum(axis=1, keepdims=True)
    return post / norm, float(np.sum(top[:, 0] + np.log(norm[:, 0])))


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
    lo, hi = RATING_SCALE
    guess = np.full(true.shape, prior.mean)

    def score(est):
        rounded = np.clip(np.rint(est), lo, hi)
        return float(np.mean(rounded == true)), float(np.sqrt(np.mean((np.clip(est, lo, hi) - true) ** 2)))

    g_exact, g_rmse = score(guess)
    design = design or MaskDesign()
    basis = design.basis(items) if items is not None else None
    scores = {}
    for name, est in _estimates(recovered, prior, 0.2, basis, design.noise_sigma, design.scale_range):
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
    post, _ = _e_step(recovered / scale + clean_mask, np.log(prior.histogram + 1e-12),
                      float(np.hypot(noise_sigma / scale, 1e-3)))
    lo, hi = RATING_SCALE
    guess = np.full(true.shape, prior.mean)
    exact = float(np.mean(LEVELS[np.argmax(post, axis=1)] == true))
    err = float(np.sqrt(np.mean((post @ LEVELS - true) ** 2)))
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


@dataclass
class _PlainUpload:
    round: int
    V: np.ndarray
    rows: np.ndarray  # (n_items, row_length), model units


class RatingAuditor:
    """The participant-side self-audit (see the module docstring); device data only.

    ``trainer`` gives the item matrix the user downloaded this round (read during the
    round, before the server's update) and the public hyperparameters.
    """

    def __init__(self, trainer, masked: MaskedSplit, true_train: np.ndarray, prior: PublicPrior,
                 metrics: tuple[str, ...] = AUDIT_METRICS, margin: float | None = None) -> None:
        metrics = tuple(metrics)
        if not metrics or any(m not in AUDIT_METRICS for m in metrics):
            raise ConfigError(f"audit metrics must be a non-empty subset of {AUDIT_METRICS}, got {metrics!r}")
        self.trainer, self.prior, self.metrics, self.design = trainer, prior, metrics, masked.design
        self.margin = margin  # known: stop the estimators once one beats it (the upload is encrypted)
        train = masked.split.train
        self.rows = train.rows_by_user()
        self.items = train.items
        self.true = true_train
        self.masked_targets = train.ratings
        self.last_clear: dict[int, _PlainUpload] = {}
        self._cache: dict[int, tuple[np.ndarray, dict[str, float]]] = {}
        self.attacks_run = 0

    def _upload(self, vector: np.ndarray) -> np.ndarray | None:
        width = self.trainer.config.row_length
        if vector.size != self.trainer.n_items * width:
            return None
        return vector.reshape(-1, width) * self.trainer.upload_scale

    def advantage(self, cid: int, round: int, vector: np.ndarray) -> dict[str, float]:
        """The best estimators' advantage over the guess, one per audited metric."""
        cannot_tell = {m: float("inf") for m in self.metrics}
        rows = self._upload(vector)
        if rows is None:
            return cannot_tell  # not a model upload (e.g. the setup round): encrypt
        user_rows = self.rows[cid]
        recovered = self.masked_targets[user_rows]
        prev = self.last_clear.get(cid)
        if prev is not None and prev.round == round - 1:
            recovered = self._attack(cid, prev, _PlainUpload(round, self.trainer.V, rows))
            if recovered is None:
                return cannot_tell
        return self._score(cid, recovered)

    def _score(self, cid: int, recovered: np.ndarray) -> dict[str, float]:
        """Advantage of the best estimator; reused while the recovered targets are unchanged
        (the masked targets are fixed, so the attack recovers the same r~ every round)."""
        cached = self._cache.get(cid)
        if cached is not None and np.allclose(cached[0], recovered, rtol=0, atol=1e-9):
            return cached[1]
        rows = self.rows[cid]
        score = leakage(self.true[rows], recovered, self.prior, self.design, self.items[rows],
                        stop_above=self.margin, stop_metrics=self.metrics)
        adv = {m: score.advantage(m) for m in self.metrics}
        self._cache[cid] = (recovered.copy(), adv)
        return dict(adv)

    def _attack(self, cid: int, prev: _PlainUpload, cur: _PlainUpload) -> np.ndarray | None:
        from attacks.gradient_leakage import RECOVERED, RoundObservation, attack_user
        from attacks.observe import public_params

        obs = [RoundObservation(u.rows, u.V, self._support(cid), u.round) for u in (prev, cur)]
        result = attack_user(obs, public_params(self.trainer))
        self.attacks_run += 1
        if result.status != RECOVERED:
            return None
        order = np.argsort(np.argsort(self.items[self.rows[cid]]))
        return result.ratings[order]

    def _support(self, cid: int) -> np.ndarray | None:
        return self.items[self.rows[cid]] if self.trainer.mode == "part" else None

    def sent_in_clear(self, cid: int, round: int, vector: np.ndarray) -> None:
        rows = self._upload(vector)
        if rows is not None:
            self.last_clear[cid] = _PlainUpload(round, self.trainer.V.copy(), rows.copy())


# --------------------------------------------------------------------------- measured attack


@dataclass
class PairRecorder:
    """Trainer observer keeping, per user, the first two consecutive rounds the server
    decoded in clear (``view.per_client``; the backend needs ``record_view=True``).

    The masked targets do not change between rounds, so one pair is what the attack needs.
    """

    trainer: object
    pairs: dict[int, list[_PlainUpload]] = field(default_factory=dict)
    _last: dict[int, _PlainUpload] = field(default_factory=dict)
    clear_users: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._V_before = self.trainer.V.copy()

    def __call__(self, rnd, result, uploads, upload_scale) -> None:
        width = self.trainer.config.row_length
        for cid, vec in result.view.per_client.items():
            self.clear_users.add(cid)
            if cid in self.pairs:
                continue
            up = _PlainUpload(rnd, self._V_before, vec.reshape(-1, width) * upload_scale)
            prev = self._last.get(cid)
            if prev is not None and prev.round == rnd - 1:
                self.pairs[cid] = [prev, up]
                self._last.pop(cid)
            else:
                self._last[cid] = up
        self._V_before = self.trainer.V.copy()


def attack_masked_uploads(trainer, recorder: PairRecorder, true_train: np.ndarray,
                          prior: PublicPrior, design: MaskDesign | None = None,
                          margin: float | None = None) -> dict[str, object]:
    """Run the gradient-leakage attack on every user the server saw in clear in two
    consecutive rounds; score its best estimates of the TRUE ratings against the guess.

    Fractions are pooled over ratings (each rating counts once); ``exact_fraction`` uses
    each user's best estimator under the exact metric, ``rmse`` its best under RMSE,
    ``per_estimator`` every estimator pooled alike. ``masked_targets_*`` scores the
    attack's raw output against r - m (what it can recover at most). With ``margin``,
    ``users_within_margin`` counts the recovered users whose advantage is <= margin
    under both metrics (those the self-audit would let out in clear).
    """
    from attacks.gradient_leakage import RECOVERED, RoundObservation, attack_user
    from attacks.observe import public_params

    params = public_params(trainer)
    train = trainer.split.train
    rows_by_user = train.rows_by_user()
    n = exact = guess_exact = sq = guess_sq = masked_err = 0.0
    recovered_users, failed, within = 0, 0, 0
    by_estimator = {"exact": {}, "rmse": {}}
    per_estimator: dict[str, list[float]] = {}
    advantages = {"exact": [], "rmse": []}
    for cid, (a, b) in sorted(recorder.pairs.items()):
        rows = rows_by_user[cid]
        support = train.items[rows] if trainer.mode == "part" else None
        obs = [RoundObservation(u.rows, u.V, support, u.round) for u in (a, b)]
        result = attack_user(obs, params)
        if result.status != RECOVERED:
            failed += 1
            continue
        order = np.argsort(np.argsort(train.items[rows]))
        recovered = result.ratings[order]
        masked_err += float(np.sum((recovered - train.ratings[rows]) ** 2))
        score = leakage(true_train[rows], recovered, prior, design, train.items[rows])
        recovered_users += 1
        n += score.n
        exact += score.exact_fraction * score.n
        guess_exact += score.guess_exact_fraction * score.n
        sq += score.rmse**2 * score.n
        guess_sq += score.guess_rmse**2 * score.n
        for metric, name in (("exact", score.estimator), ("rmse", score.rmse_estimator)):
            by_estimator[metric][name] = by_estimator[metric].get(name, 0) + 1
            advantages[metric].append(score.advantage(metric))
        for name, (e, r) in score.per_estimator.items():
            acc = per_estimator.setdefault(name, [0.0, 0.0])
            acc[0] += e * score.n
            acc[1] += r**2 * score.n
        if margin is not None:
            within += max(score.advantage("exact"), score.advantage("rmse")) <= margin
    users_in_clear = len(recorder.clear_users)
    out = {
        "users_seen_in_clear": users_in_clear,
        "users_attacked": len(recorder.pairs),
        "users_recovered": recovered_users,
        "users_attack_failed": failed,
        "users_in_clear_without_consecutive_pair": users_in_clear - len(recorder.pairs),
        "ratings": int(n),
        "exact_fraction": exact / n if n else None,
        "rmse": float(np.sqrt(sq / n)) if n else None,
        "guess_exact_fraction": guess_exact / n if n else None,
        "guess_rmse": float(np.sqrt(guess_sq / n)) if n else None,
        "masked_targets_rmse": float(np.sqrt(masked_err / n)) if n else None,
        "max_user_advantage": max(advantages["exact"]) if advantages["exact"] else None,
        "max_user_advantage_rmse": max(advantages["rmse"]) if advantages["rmse"] else None,
        "best_estimator_counts": by_estimator["exact"],
        "best_rmse_estimator_counts": by_estimator["rmse"],
        "per_estimator": {k: {"exact_fraction": v[0] / n, "rmse": float(np.sqrt(v[1] / n))}
                          for k, v in per_estimator.items()} if n else {},
    }
    if margin is not None:
        out.update(margin=margin, users_within_margin=within,
                   fraction_within_margin=within / recovered_users if recovered_users else None)
    return out


# --------------------------------------------------------------------------- training run

POLICIES = ("none", "count", "audit", "all", "never")


@dataclass
class MaskedRunConfig:
    """Options of :func:`train_masked` (the ``fedmf train --mask personalized`` flags)."""

    dataset: str
    mask_model: str = "ridge"
    mask_alpha: float = 30.0
    #: private noise added to every training rating's mask (PrivateNoise); 0: none
    mask_noise: float = 0.0
    #: (low, high): residuals shrunk by a private per-user scale (PrivateScale); None: no
    mask_scale: tuple[float, float] | None = None
    #: keep the noise only for users it lets pass the audit (keep_noise_where_it_passes)
    selective_noise: bool = False
    #: device-side refit of the private user coordinates on the denoised targets
    refit: bool = False
    policy: str = "none"
    min_fitted: int = 100
    audit_margin: float = 0.05
    #: the audit lets an upload out in clear only if the advantage is <= margin under each
    audit_metrics: tuple[str, ...] = AUDIT_METRICS
    rounds: int = 60
    mode: str = "full"
    seed: int = 0
    compare_plain: bool = True
    compare_encrypt_all_rounds: int = 0
    #: train with a seeded random subset of this many users (None: all); the test RMSE
    #: then covers all test ratings, so use it for cost measurements only
    participants: int | None = None

    def users(self, split: Split) -> np.ndarray | None:
        n = split.train.n_users
        if self.participants is None:
            return None
        if not 2 <= self.participants <= n:
            raise ConfigError(f"participants must be in 2..{n}, got {self.participants}")
        return np.sort(np.random.default_rng(self.seed).choice(n, self.participants, replace=False))


def train_masked(split: Split, backend, config, run: MaskedRunConfig, *, log=print) -> dict[str, object]:
    """FedMF on masked targets over ``backend`` (with ``run.policy`` != "none": the
    encrypting path of an :class:`~secagg.adaptive.AdaptiveBackend`), then the
    gradient-leakage attack on what the server saw in clear; returns the JSON summary.

    With ``compare_plain``, plain FedMF (unmasked, plain backend, same model and seed)
    is trained alongside for the accuracy and the attack comparison. With
    ``compare_encrypt_all_rounds`` > 0 and a policy, the same masked run with every
    upload encrypted is timed for that many rounds (the cost peer).
    """
    if run.policy not in POLICIES:
        raise ConfigError(f"policy must be one of {POLICIES}, got {run.policy!r}")
    prior = PublicPrior.from_ratings(split.train.ratings)
    masked = make_masks(split, run, prior)
    trainer, adaptive, auditor = _masked_trainer(split, masked, backend, config, run, prior, run.policy)
    recorder, infos = PairRecorder(trainer), []
    trainer.observer = lambda *a: (recorder(*a), infos.append(a[1].info))
    cpu = _timed_rounds(trainer, run.rounds, log)
    summary = trainer.result().summary()
    summary.pop("history")
    summary["cpu_seconds_per_round"] = cpu
    if run.refit:
        U = refit_private(trainer, split.train.ratings - masked.clean_train_mask)
        summary.update(test_rmse_before_refit=summary["test_rmse"],
                       test_rmse=test_rmse(trainer, U, masked.test_offset))
    explained = [m.explained for m in masked.masks.values()]
    summary.update(
        mask={"model": run.mask_model, "alpha": run.mask_alpha if run.mask_model == "ridge" else None,
              "noise_sigma": run.mask_noise, "private_scale": run.mask_scale, "refit": run.refit,
              "selective_noise": run.selective_noise, "noisy_users": len(masked.noisy_users),
              "users": len(masked.masks), "mean_explained_variance": float(np.mean(explained)),
              "mean_fitted": float(np.mean(list(masked.fitted_counts.values())))},
        policy=run.policy,
        participants=len(trainer.participants()),
        encrypting_backend=adaptive.encrypted.name if adaptive is not None else backend.name,
        encrypted_fraction=_encrypted_fraction(trainer.backend, infos),
        attack=attack_masked_uploads(trainer, recorder, split.train.ratings, prior, masked.design,
                                     margin=run.audit_margin),
    )
    if adaptive is not None:
        summary.update(_adaptive_summary(run, infos, auditor))
    if run.compare_plain:
        summary.update(_plain_reference(split, config, run, prior, log))
        summary["rmse_difference"] = summary["test_rmse"] - summary["plain_fedmf_test_rmse"]
        if run.refit:
            summary["rmse_difference_vs_plain_refit"] = summary["test_rmse"] - summary["plain_fedmf_refit_test_rmse"]
    if adaptive is not None and run.compare_encrypt_all_rounds > 0:
        summary["encrypt_all"] = _encrypt_all_peer(split, masked, adaptive.encrypted, config, run, prior)
        peer = summary["encrypt_all"]["seconds_per_round"]
        summary["seconds_per_round_vs_encrypt_all"] = summary["seconds_per_round"] / peer
    return summary


def _timed_rounds(trainer, rounds: int, log) -> float:
    """Run ``rounds`` rounds; return the process CPU seconds per round (this process
    only: every client, the server and the audits run in it unless a backend has workers)."""
    t0 = time.process_time()
    for _ in range(rounds):
        log(trainer.run_round().line())
    return (time.process_time() - t0) / rounds


def _masked_trainer(split, masked, backend, config, run, prior, policy):
    users = run.users(split)
    if policy == "none":
        if not backend.record_view:
            raise ConfigError("the mask-only run attacks the server's view: build the backend "
                              "with record_view=True")
        trainer = FedMFTrainer(masked.split, backend, config=config, mode=run.mode, seed=run.seed,
                               prediction_offset=masked.test_offset, users=users)
        return trainer, None, None
    auditor = None
    if policy == "count":
        rule = CountPolicy(masked.fitted_counts, run.min_fitted)
    elif policy == "audit":
        rule = _DeferredAudit()
    else:
        rule = FixedPolicy(encrypt=policy == "all")
    adaptive = AdaptiveBackend(backend, rule, record_view=True)
    trainer = FedMFTrainer(masked.split, adaptive, config=config, mode=run.mode, seed=run.seed,
                           prediction_offset=masked.test_offset, users=users)
    if policy == "audit":
        auditor = RatingAuditor(trainer, masked, split.train.ratings, prior, run.audit_metrics, run.audit_margin)
        adaptive.policy = rule.bind(auditor, run.audit_margin)
    return trainer, adaptive, auditor


class _DeferredAudit:
    """Placeholder policy for the trainer's setup round, which runs before the auditor
    (which needs the trainer) exists: every setup upload is encrypted."""

    def decide(self, cid, round, vector):
        return Decision(True, float("inf"), "setup before the audit exists")

    def record(self, cid, round, vector, encrypted):
        pass

    def bind(self, auditor, margin):
        return SelfAuditPolicy(auditor, margin)


def _encrypted_fraction(backend, infos) -> float:
    """Mean over training rounds of the fraction of uploads that went through encryption."""
    fractions = [i["encrypted_fraction"] for i in infos if "encrypted_fraction" in i]
    if fractions:
        return float(np.mean(fractions))
    return 1.0 if backend.hides_updates else 0.0


def _adaptive_summary(run, infos, auditor) -> dict[str, object]:
    per_round = lambda path, key: float(np.mean([i[f"{path}_cost"][key] for i in infos]))
    out = {
        "encrypted_path_client_seconds_per_round": per_round("encrypted", "client_seconds"),
        "encrypted_path_server_seconds_per_round": per_round("encrypted", "server_seconds"),
        "plain_path_client_seconds_per_round": per_round("plain", "client_seconds"),
        "bytes_up_per_round": per_round("encrypted", "bytes_up") + per_round("plain", "bytes_up"),
        "promoted_per_round": float(np.mean([len(i["promoted"]) for i in infos])),
        "policy_client_seconds_per_round": float(np.mean([i["policy_client_seconds"] for i in infos])),
        "encrypted_fraction_per_round": [i["encrypted_fraction"] for i in infos],
    }
    if run.policy == "count":
        out["min_fitted"] = run.min_fitted
    if auditor is not None:
        out.update(audit_margin=run.audit_margin, audit_metrics=list(run.audit_metrics),
                   audit_attacks_run=auditor.attacks_run)
    return out


def _plain_reference(split, config, run, prior, log) -> dict[str, object]:
    """Plain FedMF (no mask, plain backend, same model and seed) and the attack on it."""
    trainer = FedMFTrainer(split, make_backend("plain", record_view=True), config=config,
                           mode=run.mode, seed=run.seed, users=run.users(split))
    recorder = PairRecorder(trainer)
    trainer.observer = recorder
    for _ in range(run.rounds):
        trainer.run_round()
    rmse_ = trainer.history[-1].test_rmse
    log(f"plain FedMF (no mask, plain backend): rmse {rmse_:.4f}")
    out = {"plain_fedmf_test_rmse": rmse_,
           "plain_fedmf_attack": attack_masked_uploads(trainer, recorder, split.train.ratings, prior,
                                                       margin=run.audit_margin)}
    if run.refit:
        out["plain_fedmf_refit_test_rmse"] = test_rmse(trainer, refit_private(trainer, split.train.ratings))
    return out


def _encrypt_all_peer(split, masked, encrypted_backend, config, run, prior) -> dict[str, object]:
    """The cost peer: the same masked run with every upload through the encrypting backend."""
    trainer, adaptive, _ = _masked_trainer(split, masked, encrypted_backend, config, run, prior, "all")
    cpu = _timed_rounds(trainer, run.compare_encrypt_all_rounds, lambda *_: None)
    h = trainer.history
    return {"rounds": len(h),
            "seconds_per_round": float(np.mean([r.seconds for r in h])),
            "cpu_seconds_per_round": cpu,
            "client_seconds_per_round": float(np.mean([r.client_seconds for r in h])),
            "server_seconds_per_round": float(np.mean([r.server_seconds for r in h])),
            "bytes_up_per_client": float(np.mean([r.bytes_up_per_client for r in h])),
            "test_rmse": h[-1].test_rmse}


# --------------------------------------------------------------------------- command line


def add_mask_arguments(parser) -> None:
    """The ``--mask personalized`` and ``--policy`` flags of ``fedmf train``."""
    group = parser.add_argument_group("personalized masks (FedMMF, our reconstruction)")
    group.add_argument("--mask", choices=("none", "personalized"), default="none",
                       help="personalized: train on targets masked by a local model, predict with it added back")
    group.add_argument("--mask-model", choices=MASK_MODELS, default="ridge",
                       help="local model: ridge on public genres (MovieLens), the user's mean, or a local MF")
    group.add_argument("--mask-alpha", type=float, default=30.0, help="ridge strength of --mask-model ridge")
    group.add_argument("--mask-noise", type=float, default=0.0, metavar="SIGMA",
                       help="add private N(0, SIGMA^2) noise (os.urandom) to each training rating's mask")
    group.add_argument("--mask-scale", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="shrink each user's residuals by a private scale drawn from U[LOW, HIGH]")
    group.add_argument("--selective-noise", action="store_true",
                       help="keep --mask-noise only for users it lets pass the audit (others keep the clean mask)")
    group.add_argument("--refit", action="store_true",
                       help="device-side refit of the private user vector and bias on the denoised targets")
    group.add_argument("--policy", choices=POLICIES, default="none",
                       help="adaptive protocol: per user and round, plaintext or --backend (encrypting); "
                            "count: encrypt masks fitted on < --min-fitted ratings; audit: self-audit with "
                            "the gradient-leakage attack; all / never: encrypt every / no upload")
    group.add_argument("--min-fitted", type=int, default=100, help="count policy threshold")
    group.add_argument("--audit-margin", type=float, default=0.05,
                       help="audit policy: encrypt when the attack beats the no-knowledge guess by more")
    group.add_argument("--audit-metric", choices=("both", *AUDIT_METRICS), default="both",
                       help="audit advantage: exact-rating fraction, RMSE (rating units), or both "
                            "(default: plaintext only if within the margin under each)")
    group.add_argument("--compare-encrypt-all", type=int, default=0, metavar="ROUNDS",
                       help="also time ROUNDS rounds with every upload encrypted (the cost peer)")
    group.add_argument("--participants", type=int, metavar="N",
                       help="train with a seeded random subset of N users (cost measurements)")
    group.add_argument("--no-plain-reference", action="store_true",
                       help="skip the plain FedMF reference run (accuracy and attack comparison)")


def run_masked(args, split: Split, backend, config) -> int:
    """``fedmf train --mask personalized``: print the comparison, write the JSON summary."""
    import json

    if args.policy != "none" and args.mask != "personalized":
        raise ConfigError("--policy needs --mask personalized")
    run = MaskedRunConfig(
        dataset=args.dataset, mask_model=args.mask_model, mask_alpha=args.mask_alpha,
        mask_noise=args.mask_noise, refit=args.refit, selective_noise=args.selective_noise,
        mask_scale=tuple(args.mask_scale) if args.mask_scale else None,
        policy=args.policy, min_fitted=args.min_fitted, audit_margin=args.audit_margin,
        audit_metrics=AUDIT_METRICS if args.audit_metric == "both" else (args.audit_metric,),
        rounds=args.rounds, mode=args.mode, seed=args.seed,
        compare_plain=not args.no_plain_reference, compare_encrypt_all_rounds=args.compare_encrypt_all,
        participants=args.participants,
    )
    if args.policy != "none" and not backend.hides_updates:
        print("note: the encrypting path is the plain backend (a stand-in): decisions, accuracy and "
              "leakage are real, encryption costs are not measured")
    print(f"{split.name}: personalized masks ({run.mask_model}), backend {backend.name}, "
          f"policy {run.policy}, mode {run.mode}")
    summary = train_masked(split, backend, config, run)
    summary.update(dataset=args.dataset, split=args.split)
    attack = summary["attack"]
    print(f"mask + FedMF: rmse {summary['test_rmse']:.4f}, {summary['seconds_per_round']:.3f} s/round, "
          f"encrypted fraction {summary['encrypted_fraction']:.3f}")
    if "plain_fedmf_test_rmse" in summary:
        print(f"plain FedMF: rmse {summary['plain_fedmf_test_rmse']:.4f} "
              f"(difference {summary['rmse_difference']:+.4f})")
    if attack["exact_fraction"] is not None:
        print(f"attack on {attack['users_recovered']} users in clear: exact {attack['exact_fraction']:.3f} "
              f"(guess {attack['guess_exact_fraction']:.3f}), rmse {attack['rmse']:.3f} "
              f"(guess {attack['guess_rmse']:.3f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, default=_json_default))
    return 0


def _json_default(value):
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
