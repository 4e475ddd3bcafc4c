"""Personalized local masks: our reading of FedMMF (Yang et al., FL-IJCAI 2022) [R].

The paper's abstract says only that each participant protects its data with a
*personalized mask generated from its local data alone*, without accuracy loss, and
that the mask combines with an adaptive secure-aggregation protocol. Its method section
is not public; the mechanism below is our reconstruction from that abstract, not
the paper's text.

A participant fits a local model f on its own samples (x_k, y_k) only. The mask of a
sample is the local model's prediction, m_k = f(x_k); the participant trains the
federated model on **masked targets**  y~_k = y_k - m_k,  so the federated model learns
the residual, and predicts on the device as  y^ = m + (federated prediction).
The mask never leaves the device. A federated learner of the residual can only add
capacity to f (boosting-like), and with m = 0 it is the unmasked model.

What a plaintext upload still leaks [R]: a server that inverts uploads recovers at
best the masked targets y~ = y - m; its knowledge of y is then its knowledge of m. A
strong mask (m close to y) leaves it little; a weak one (e.g. a constant per-participant
offset on integer ratings) is undone by guessing the offset. Use
:mod:`secagg.adaptive` to encrypt the uploads whose mask does not suffice.

Local models are pluggable (anything with ``fit(x, y) -> predictor``):

* :class:`BiasModel`: the participant's (optionally shrunk) mean, a per-user baseline;
* :class:`RidgeModel`: ridge regression on a public feature table indexed by key
  (e.g. item genres), intercept = local mean;
* :class:`LocalMFModel`: a small biased MF over the participant's own (row, key) pairs
  with private key factors (meaningful for a participant holding many rows, e.g. a
  silo; with one row it shrinks each seen key toward its rating);
* :class:`CallableModel`: any ``fit(x, y) -> predict`` function;
* :class:`PrivateNoise`: wraps any of them and adds a private Gaussian draw eta_x
  (``sigma``, from ``os.urandom``) to the mask of every *fitted* key, fixed for the whole
  training; unseen keys (test items) get the base model alone. Why: a server that
  recovers y - m exactly on integer ratings undoes any mask that is a function of few
  private numbers (a per-user constant, ridge weights on public features) by fitting
  them so that y - m + f lands on the integer grid; an item-varying private part is what
  it cannot fit. The price is label noise on what the federated model learns from;
* :class:`PrivateScale`: wraps a model f and keeps a private share of the residual,
  m(x) = f(x) + (1 - s)(y_x - f(x)) on fitted keys, so the masked targets are
  s (y - f) with a private scale s (``os.urandom``, uniform in [low, high]).

This module is model-agnostic: keys ``x`` are whatever the local model understands.
Example::

    mask = fit_personal_mask(BiasModel(), items, ratings)
    targets = mask.mask(items, ratings)            # train the federated model on these
    prediction = mask.unmask(test_items, residual)  # on the device
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import InvalidInputError

Predictor = Callable[[np.ndarray], np.ndarray]


class LocalModel(Protocol):
    """A model fitted on one participant's samples only."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        """Return a function mapping keys to predictions (one per key)."""


@dataclass(frozen=True)
class PersonalMask:
    """A fitted personalized mask m = f(x), kept on the participant's device.

    ``n_fitted`` is the number of samples f saw; ``residual_rms`` the in-sample
    root-mean-square of y - m; ``spread`` the in-sample RMS of y - mean(y). Their ratio
    says how much of the participant's own variation the mask explains (the smaller,
    the less a server that recovers y - m learns about y).
    """

    predictor: Predictor
    n_fitted: int
    residual_rms: float
    spread: float

    def values(self, x: np.ndarray) -> np.ndarray:
        """m(x), checked finite and one per key."""
        x = np.asarray(x)
        m = np.asarray(self.predictor(x), dtype=np.float64)
        if m.shape != (x.shape[0],) or not np.all(np.isfinite(m)):
            raise InvalidInputError(
                f"local model returned shape {m.shape} (want ({x.shape[0]},)) or non-finite values"
            )
        return m

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Masked targets y - m(x): what the participant trains the federated model on."""
        y = _check_targets(x, y)
        return y - self.values(x)

    def base_values(self, x: np.ndarray) -> np.ndarray:
        """m(x) of the innermost base model, without the private parts added by
        :class:`PrivateNoise` / :class:`PrivateScale` (= :meth:`values` for other models):
        the device's denoised targets y - base are what it refits its private parameters on."""
        base = self.predictor
        while getattr(base, "base", None) is not None:
            base = base.base
        return PersonalMask(base, 0, 0.0, 0.0).values(x)

    @property
    def private_scale(self) -> float:
        """s of a :class:`PrivateScale` mask (masked targets s (y - f) + noise), else 1."""
        scale, predictor = 1.0, self.predictor
        while predictor is not None:
            scale *= getattr(predictor, "scale", 1.0)
            predictor = getattr(predictor, "base", None)
        return scale

    def unmask(self, x: np.ndarray, residual_prediction: np.ndarray) -> np.ndarray:
        """Device-side prediction m(x) + federated residual prediction."""
        r = _check_targets(x, residual_prediction)
        return self.values(x) + r

    @property
    def explained(self) -> float:
        """1 - (residual_rms / spread)^2: the in-sample share of variance the mask explains."""
        return 1.0 - (self.residual_rms / self.spread) ** 2 if self.spread > 0 else 1.0


def fit_personal_mask(model: LocalModel, x: np.ndarray, y: np.ndarray) -> PersonalMask:
    """Fit ``model`` on the participant's own samples and return its mask."""
    y = _check_targets(x, y)
    if y.size == 0:
        raise InvalidInputError("a personal mask needs at least one local sample")
    predictor = model.fit(np.asarray(x), y)
    spread = float(np.sqrt(np.mean((y - y.mean()) ** 2)))
    residual = y - PersonalMask(predictor, int(y.size), 0.0, spread).values(x)
    return PersonalMask(predictor, int(y.size), float(np.sqrt(np.mean(residual**2))), spread)


def _check_targets(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or x.shape[:1] != y.shape:
        raise InvalidInputError(f"need one target per key: keys {x.shape}, targets {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InvalidInputError("targets contain NaN or inf")
    return y


@dataclass(frozen=True)
class BiasModel:
    """m = (sum y + shrinkage * prior) / (n + shrinkage): the participant's shrunk mean.

    ``prior`` must be public (e.g. the rating scale's midpoint), so the mask still comes
    from local data only.
    """

    shrinkage: float = 0.0
    prior: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.shrinkage) and self.shrinkage >= 0 and np.isfinite(self.prior)):
            raise InvalidInputError(f"shrinkage must be >= 0 and prior finite, got {self.shrinkage}, {self.prior}")

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        b = (y.sum() + self.shrinkage * self.prior) / (y.size + self.shrinkage)
        return lambda keys: np.full(np.asarray(keys).shape[0], b)


@dataclass(frozen=True)
class RidgeModel:
    """m(x) = mean(y) + <w, F[x]>,  w = argmin |y - mean(y) - F w|^2 + alpha |w|^2.

    ``features`` is a public table (n_keys, d), row ``x`` for key ``x``; only the weights
    w and the intercept are personal.
    """

    features: np.ndarray
    alpha: float = 30.0

    def __post_init__(self) -> None:
        F = np.asarray(self.features, dtype=np.float64)
        if F.ndim != 2 or not np.all(np.isfinite(F)):
            raise InvalidInputError(f"features must be a finite 2-D table, got shape {F.shape}")
        if not (np.isfinite(self.alpha) and self.alpha > 0):
            raise InvalidInputError(f"alpha must be > 0, got {self.alpha}")

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys)
        if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
            raise InvalidInputError("RidgeModel keys must be a 1-D integer array of feature rows")
        if keys.size and (keys.min() < 0 or keys.max() >= len(self.features)):
            raise InvalidInputError(f"keys outside the feature table 0..{len(self.features) - 1}")
        return np.asarray(self.features, dtype=np.float64)[keys]

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        F = self._rows(x)
        b = y.mean()
        w = np.linalg.solve(F.T @ F + self.alpha * np.eye(F.shape[1]), F.T @ (y - b))
        return lambda keys: b + self._rows(keys) @ w


@dataclass(frozen=True)
class LocalMFModel:
    """A small biased MF fitted by full-batch gradient descent on local (row, key) pairs.

    m(row, key) = g + a_row + c_key + <p_row, q_key>, with every parameter private;
    unseen rows or keys contribute 0 beyond g. Loss: mean squared error + ``reg`` times
    the squared norms. ``x`` is an (n, 2) integer array of (local row, key).
    Initialisation uses a seeded numpy generator (model init, not a secret).
    """

    factors: int = 4
    reg: float = 0.05
    lr: float = 0.5
    epochs: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.epochs < 1 or not self.lr > 0 or self.reg < 0:
            raise InvalidInputError(f"invalid LocalMFModel hyperparameters: {self}")

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != 2 or not np.issubdtype(x.dtype, np.integer):
            raise InvalidInputError("LocalMFModel keys must be an (n, 2) integer array of (row, key)")
        rows, r_idx = np.unique(x[:, 0], return_inverse=True)
        keys, k_idx = np.unique(x[:, 1], return_inverse=True)
        rng = np.random.default_rng(self.seed)
        P = rng.normal(0, 0.1, (rows.size, self.factors))
        Q = rng.normal(0, 0.1, (keys.size, self.factors))
        a, c, g = np.zeros(rows.size), np.zeros(keys.size), y.mean()
        n = y.size
        for _ in range(self.epochs):
            e = y - g - a[r_idx] - c[k_idx] - np.einsum("ij,ij->i", P[r_idx], Q[k_idx])
            gP = np.zeros_like(P)
            gQ = np.zeros_like(Q)
            np.add.at(gP, r_idx, -2 * e[:, None] * Q[k_idx])
            np.add.at(gQ, k_idx, -2 * e[:, None] * P[r_idx])
            ga = np.bincount(r_idx, -2 * e, rows.size)
            gc = np.bincount(k_idx, -2 * e, keys.size)
            P -= self.lr * (gP / n + 2 * self.reg * P)
            Q -= self.lr * (gQ / n + 2 * self.reg * Q)
            a -= self.lr * (ga / n + 2 * self.reg * a)
            c -= self.lr * (gc / n + 2 * self.reg * c)
        return _LocalMFPredictor(rows, keys, g, a, c, P, Q)


@dataclass(frozen=True)
class _LocalMFPredictor:
    rows: np.ndarray
    keys: np.ndarray
    g: float
    a: np.ndarray
    c: np.ndarray
    P: np.ndarray
    Q: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != 2:
            raise InvalidInputError("LocalMFModel keys must be an (n, 2) integer array of (row, key)")
        out = np.full(x.shape[0], self.g)
        ri, ki = _lookup(self.rows, x[:, 0]), _lookup(self.keys, x[:, 1])
        out[ri >= 0] += self.a[ri[ri >= 0]]
        out[ki >= 0] += self.c[ki[ki >= 0]]
        both = (ri >= 0) & (ki >= 0)
        out[both] += np.einsum("ij,ij->i", self.P[ri[both]], self.Q[ki[both]])
        return out


def _lookup(sorted_ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query in ``sorted_ids``, or -1 if absent."""
    pos = np.clip(np.searchsorted(sorted_ids, queries), 0, max(sorted_ids.size - 1, 0))
    found = sorted_ids.size > 0
    hit = found & (sorted_ids[pos] == queries) if found else np.zeros(queries.shape, bool)
    return np.where(hit, pos, -1)


@dataclass(frozen=True)
class CallableModel:
    """Any local model given as ``fit(x, y) -> predict`` (a function of the local data only)."""

    fit_function: Callable[[np.ndarray, np.ndarray], Predictor]

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        return self.fit_function(x, y)


def private_normal(size: int, sigma: float) -> np.ndarray:
    """``size`` draws of N(0, sigma^2) from ``os.urandom`` (Box-Muller on 53-bit uniforms).

    Mask noise is a secret of the participant: it never comes from a numpy generator.
    """
    if size < 0 or not (np.isfinite(sigma) and sigma >= 0):
        raise InvalidInputError(f"need size >= 0 and a finite sigma >= 0, got {size}, {sigma}")
    half = (size + 1) // 2
    words = np.frombuffer(os.urandom(16 * half), dtype=np.uint64).reshape(2, half) >> np.uint64(11)
    u1 = (words[0].astype(np.float64) + 1.0) / 2.0**53  # in (0, 1]: log is finite
    u2 = words[1].astype(np.float64) / 2.0**53
    radius = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return sigma * z[:size]


@dataclass(frozen=True)
class PrivateNoise:
    """m(x) = f(x) + eta_x: a base local model plus private noise on the fitted keys.

    eta_x ~ N(0, sigma^2) is drawn once per distinct fitted key with :func:`private_normal`
    and kept on the device (the mask is fixed across rounds, so a server averaging rounds
    learns nothing more); keys the model was not fitted on get f(x) alone. Keys are a
    1-D integer array. The predictor's ``base`` is f (see :meth:`PersonalMask.base_values`).
    """

    base: LocalModel
    sigma: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise InvalidInputError(f"noise sigma must be finite and >= 0, got {self.sigma}")

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        x = np.asarray(x)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
            raise InvalidInputError("PrivateNoise keys must be a 1-D integer array")
        keys = np.unique(x)
        return _KeyedOffsetPredictor(self.base.fit(x, y), keys, private_normal(keys.size, self.sigma))


@dataclass(frozen=True)
class _KeyedOffsetPredictor:
    """base(x) + offset[x] for the stored keys, base(x) for any other key; ``scale`` is
    the share of the residual the masked targets keep (PrivateScale's s, else 1)."""

    base: Predictor
    keys: np.ndarray
    noise: np.ndarray
    scale: float = 1.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        idx = _lookup(self.keys, x)
        out = np.asarray(self.base(x), dtype=np.float64).copy()
        out[idx >= 0] += self.noise[idx[idx >= 0]]
        return out


def private_uniform(low: float, high: float) -> float:
    """One draw of U[low, high) from ``os.urandom`` (53 random bits)."""
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise InvalidInputError(f"need finite low <= high, got {low}, {high}")
    bits = int.from_bytes(os.urandom(8), "big") >> 11
    return low + (high - low) * bits / 2.0**53


@dataclass(frozen=True)
class PrivateScale:
    """m(x) = f(x) + (1 - s)(y_x - f(x)) on the fitted keys, f(x) elsewhere.

    The masked targets become y - m = s (y - f): the participant's residual shrunk by a
    private scale s ~ U[low, high] (:func:`private_uniform`, one draw per participant).
    Keys are a 1-D integer array (a repeated key uses its mean target). The predictor's
    ``base`` is f (see :meth:`PersonalMask.base_values`).
    """

    base: LocalModel
    low: float = 0.3
    high: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.low <= self.high <= 1):
            raise InvalidInputError(f"need 0 < low <= high <= 1, got {self.low}, {self.high}")

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        x = np.asarray(x)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
            raise InvalidInputError("PrivateScale keys must be a 1-D integer array")
        f = self.base.fit(x, y)
        keys, inverse = np.unique(x, return_inverse=True)
        mean_y = np.bincount(inverse, y, keys.size) / np.bincount(inverse, minlength=keys.size)
        residual = mean_y - np.asarray(f(keys), dtype=np.float64)
        s = private_uniform(self.low, self.high)
        return _KeyedOffsetPredictor(f, keys, (1.0 - s) * residual, scale=s)
