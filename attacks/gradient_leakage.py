"""Gradient-leakage attack on plain FedMF (Chai et al. 2019, §4 "Gradients leak information").

An honest-but-curious server that decodes one user's item-gradient uploads solves for
the user's vector and then for every rating. Inputs are only what that server holds:
the uploads (FullText rows, or PartText rows plus their declared support), the item
matrix V' it distributed before each round, and the public hyperparameters (learning
rate gamma, regularization lambda, global mean mu, upload scale, update order).

Notation follows :mod:`fedmf.model`: u' = [u, b, 1], v' = [v, 1, c]; n = |R_i| (read off
the upload); rho = 1 - 2 gamma lambda (paper order) or 1 - 2 (gamma / n) lambda
(sequential order). After removing the known regulariser 2 lambda v'_j, every uploaded
row is  g_j = -2 e_j u_(j)  with residual e_j = r_ij - mu - <u', v'_j>.

* Paper order (all rows at the old u'), biased model: the bias coordinate of g_j is
  -2 e_j, so e_j is read directly; the factor coordinates give u = -sum e_j g_j / (2 sum e_j^2).
  The user bias b is private: r_ij is the same in two consecutive rounds, and the
  known user step  b' = rho b + (2 gamma / n) sum e_j  makes the difference
  D_j = (e_j + <u, v_j> + c_j) - (e'_j + <u', v'_j> + c'_j) - (2 gamma / n) sum e_j
  equal to  -2 gamma lambda b  for every j: b = -mean(D) / (2 gamma lambda).
* Paper order, unbiased model (our derivation [R] in the paper's update rule, both gradients
  at the old iterate; the paper states the leak in §4 without these equations; here with
  the 1/n step): g_j = -2 e_j s h,
  u = s h (h: the rows' common direction, s unknown). With c_j = <g_j, h> and the next
  round's direction h', the user step gives the linear system in (a, b) = (s^2, s s')
      rho a h - b h' = (gamma / n) sum_j c_j v_j,
  so s = +-sqrt(a), e_j = -c_j / (2 s) and r_ij = e_j + mu + s <h, v_j>; the sign is the
  one whose ratings fit the integer rating scale.
* Sequential order (the public code: per-rating SGD, row k uses the updated u_k):
  u_k = rho u_(k-1) + (2 gamma / n) e_k v_k. The server does not know the time order; it
  recovers it from the chain: the predecessor of row k is the row whose u (biased
  model) or direction (unbiased: h_(k-1) lies in span(h_k, v_k)) matches the step back
  from row k. Biased model: e_k and u_k are read per row, b_0 is fixed by two rounds as
  above. Unbiased model (our extension [R], not in the paper): each consecutive pair of
  steps gives
      s_k^2 h_k - rho (s_k s_(k-1)) h_(k-1) = -(gamma / n) c_k v_k,
  linear in two unknowns, so one round suffices when n >= 2 (a second round is
  chained on, which also covers n = 1).

Every derivation is checked against the data: the rank-1 structure, the user-update
link between rounds and the recovered chain must hold to ``tol`` (relative). If they do
not (unknown order, several local epochs, masked or encrypted uploads), the result has
``status="assumptions_violated"`` and the reason, and no ratings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ORDERS = ("paper", "sequential")
RECOVERED = "recovered"
VIOLATED = "assumptions_violated"
NO_OBSERVATION = "no_observation"


@dataclass(frozen=True)
class PublicParams:
    """What the server knows about the training run (all public in FedMF).

    ``order=None`` means the server does not know the local update order: the attack
    tries both and keeps the one whose structure checks pass.
    """

    lr: float
    reg: float
    mu: float
    factors: int
    biases: bool = True
    order: str | None = "paper"
    #: (lowest, highest) rating of the data set: the sign of s is the one whose ratings fit it
    rating_scale: tuple[float, float] = field(kw_only=True)


@dataclass
class RoundObservation:
    """One user's upload in one round as the server decoded it.

    ``upload``: (m, row_length) item-gradient rows in model units (already multiplied
    back by the public ``upload_scale``), or ``None`` if the server decoded nothing.
    ``V``: the item matrix (m, width) the server distributed before the round.
    ``support``: the item indices the user declared (PartText), else ``None``.
    ``round``: the round number (1 = first round after initialisation).
    """

    upload: np.ndarray | None
    V: np.ndarray
    support: np.ndarray | None = None
    round: int = 1


@dataclass
class AttackResult:
    """The attack's output for one user."""

    status: str
    reason: str = ""
    order: str | None = None
    #: rated items as read off the upload (support or non-zero rows), or None if unreadable
    rated_items: np.ndarray | None = None
    rated_set_source: str | None = None
    #: reconstructed ratings (unrounded) for ``rated_items``, when status is "recovered"
    ratings: np.ndarray | None = None
    #: u' at the start of the first observed round, when recovered
    user_vector: np.ndarray | None = None
    checks: dict[str, float] = field(default_factory=dict)


class _Violation(Exception):
    """An assumption of the attack does not hold for this data."""


def read_rated_items(
    obs: RoundObservation, zero_tol: float = 0.0
) -> tuple[np.ndarray | None, str | None]:
    """The rated-item attack: PartText's declared support, or FullText's non-zero rows.

    FullText plaintext uploads are zero on unrated rows (within ``zero_tol`` when the
    upload was quantised); if no row is zero the upload is not a plaintext gradient
    (masked, or a user who rated everything) and the set is reported as unreadable.
    """
    if obs.support is not None:
        return np.unique(np.asarray(obs.support, dtype=np.int64)), "support"
    if obs.upload is None:
        return None, None
    nonzero = np.any(np.abs(obs.upload) > zero_tol, axis=1)
    if nonzero.all():
        return None, None
    return np.flatnonzero(nonzero), "nonzero rows"


def attack_user(
    rounds: list[RoundObservation], params: PublicParams, *, tol: float = 1e-6,
    zero_tol: float = 0.0,
) -> AttackResult:
    """Reconstruct one user's ratings from its uploads in consecutive rounds.

    ``rounds`` are consecutive observations (two are needed for the user bias and for
    the unbiased paper order; the unbiased sequential order needs one when n >= 2).
    ``tol`` bounds the relative residual of every structure check: 1e-6 suits float64
    uploads; quantised uploads need a tolerance above their quantisation error, and
    ``zero_tol`` (in model units) to tell unrated rows from quantised zeros.
    """
    if not rounds:
        return AttackResult(NO_OBSERVATION, "no round observed")
    items, source = read_rated_items(rounds[0], zero_tol)
    result = AttackResult(NO_OBSERVATION, rated_items=items, rated_set_source=source)
    if any(r.upload is None for r in rounds):
        result.reason = "the server decoded no per-user upload (ciphertexts or no record)"
        return result
    if items is None or items.size == 0:
        result.status, result.reason = VIOLATED, "no zero rows: not a plaintext FullText upload"
        return result
    for later in rounds[1:]:
        later_items, _ = read_rated_items(later, zero_tol)
        if later_items is None or not np.array_equal(later_items, items):
            result.status, result.reason = VIOLATED, "rated set differs between rounds"
            return result
    orders = ORDERS if params.order is None else (params.order,)
    reasons = []
    for order in orders:
        try:
            ratings, user, checks = _SOLVERS[(order, params.biases)](rounds, items, params, tol)
        except _Violation as exc:
            reasons.append(f"{order} order: {exc}")
            continue
        result.status, result.order, result.ratings, result.user_vector = RECOVERED, order, ratings, user
        result.checks = checks
        return result
    result.status, result.reason = VIOLATED, "; ".join(reasons)
    return result


# --------------------------------------------------------------------------- helpers


def _rows(obs: RoundObservation, items: np.ndarray, params: PublicParams):
    """(g, Vr): regulariser-free gradient rows and the distributed item rows of ``items``."""
    Vr = obs.V[items]
    item_cols = _item_columns(params)
    g = obs.upload[items] - 2.0 * params.reg * Vr[:, item_cols]
    return g, Vr


def _item_columns(params: PublicParams) -> np.ndarray:
    """Stored columns of v' that are uploaded (all but the constant 1 of the biased model)."""
    f = params.factors
    return np.r_[0:f, f + 1] if params.biases else np.arange(f)


def _check(name: str, value: float, tol: float, checks: dict[str, float]) -> None:
    checks[name] = float(value)
    if not np.isfinite(value) or value > tol:
        raise _Violation(f"{name} = {value:.3g} exceeds tolerance {tol:g}")


def _rel(residual: np.ndarray, reference: np.ndarray) -> float:
    ref = float(np.linalg.norm(reference))
    return float(np.linalg.norm(residual)) / ref if ref > 0 else float("inf")


def _need_rounds(rounds: list[RoundObservation], k: int, why: str) -> None:
    if len(rounds) < k:
        raise _Violation(f"needs {k} consecutive rounds ({why}), got {len(rounds)}")
    for a, b in zip(rounds, rounds[1:]):
        if b.round != a.round + 1:
            raise _Violation(f"rounds {a.round} and {b.round} are not consecutive")


def _initial_bias(rounds: list[RoundObservation]) -> float:
    """With lambda = 0 the bias is fixed only by the public initialisation b = 0 (round 1)."""
    if rounds[0].round != 1:
        raise _Violation("lambda = 0: the user bias is not identifiable after round 1")
    return 0.0


# --------------------------------------------------------------------------- paper order


def _paper_biased(rounds, items, params, tol):
    """Paper order, biased model: e_j from the bias coordinate, u by least squares, b from two rounds."""
    _need_rounds(rounds, 2, "the user bias is fixed by the link between two rounds")
    f, n, checks = params.factors, items.size, {}
    states = []
    for k, obs in enumerate(rounds[:2]):
        g, Vr = _rows(obs, items, params)
        e = -g[:, f] / 2.0
        if not np.any(e):
            raise _Violation("all residuals are zero")
        u = -(e @ g[:, :f]) / (2.0 * (e @ e))
        _check(f"rank1_residual_round{k + 1}", _rel(g[:, :f] + 2.0 * np.outer(e, u), g[:, :f]), tol, checks)
        states.append((e, u, Vr))
    (e1, u1, V1), (e2, u2, V2) = states
    rho = 1.0 - 2.0 * params.lr * params.reg
    step = (2.0 * params.lr / n) * (e1 @ V1[:, :f])
    _check("user_step_residual", _rel(u2 - rho * u1 - step, u2), tol, checks)
    base1 = e1 + V1[:, :f] @ u1 + V1[:, f + 1]
    base2 = e2 + V2[:, :f] @ u2 + V2[:, f + 1]
    D = base1 - base2 - (2.0 * params.lr / n) * e1.sum()
    _check("bias_link_spread", float(np.ptp(D)) / max(1.0, float(np.abs(D).max())), tol, checks)
    b = -float(D.mean()) / (2.0 * params.lr * params.reg) if params.reg > 0 else _initial_bias(rounds)
    ratings = base1 + b + params.mu
    return ratings, np.r_[u1, b, 1.0], checks


def _paper_unbiased(rounds, items, params, tol):
    """Paper order, unbiased model: the two-round system of the module docstring,
    rho a h - b h' = (gamma / n) sum_j c_j v_j in (a, b) = (s^2, s s')."""
    _need_rounds(rounds, 2, "the scale of u is fixed by the link between two rounds")
    if params.factors < 2:
        raise _Violation("needs at least 2 latent factors (d equations in 2 unknowns)")
    n, checks = items.size, {}
    g1, V1 = _rows(rounds[0], items, params)
    g2, _ = _rows(rounds[1], items, params)
    h1 = _direction(g1, tol, checks, "rank1_residual_round1")
    h2 = _direction(g2, tol, checks, "rank1_residual_round2")
    c = g1 @ h1
    rho = 1.0 - 2.0 * params.lr * params.reg
    A = np.column_stack([rho * h1, -h2])
    rhs = (params.lr / n) * (c @ V1)
    sol, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    _check("user_step_residual", _rel(A @ sol - rhs, rhs), tol, checks)
    a = sol[0]
    if not a > 0:
        raise _Violation(f"s^2 = {a:.3g} is not positive")
    candidates = []
    for s in (np.sqrt(a), -np.sqrt(a)):
        ratings = -c / (2.0 * s) + params.mu + s * (V1 @ h1)
        candidates.append((_scale_misfit(ratings, params), ratings, s))
    candidates.sort(key=lambda t: t[0])
    checks["sign_misfit"], checks["other_sign_misfit"] = candidates[0][0], candidates[1][0]
    _, ratings, s = candidates[0]
    return ratings, s * h1, checks


def _direction(g: np.ndarray, tol: float, checks: dict[str, float], name: str) -> np.ndarray:
    """The common direction of rank-1 rows (top right singular vector), checked."""
    _, sv, vt = np.linalg.svd(g, full_matrices=False)
    if sv[0] == 0:
        raise _Violation("all gradient rows are zero")
    _check(name, float(np.sqrt(np.sum(sv[1:] ** 2))) / sv[0], tol, checks)
    return vt[0]


def _scale_misfit(ratings: np.ndarray, params: PublicParams) -> float:
    """Distance of ratings to the integer rating scale (picks the sign of s)."""
    lo, hi = params.rating_scale
    clipped = np.clip(ratings, lo, hi)
    return float(np.mean((ratings - clipped) ** 2 + (clipped - np.rint(clipped)) ** 2))


# --------------------------------------------------------------------------- sequential order


def _chain_order(current: np.ndarray, previous: np.ndarray, tol: float, checks: dict[str, float],
                 name: str, distance=None) -> np.ndarray:
    """Time order of the rows from predecessor links: row j precedes row k when the state
    recovered from row j equals the state stepped back from row k (``previous[k]``)."""
    n = current.shape[0]
    if n == 1:
        return np.zeros(1, np.int64)
    if distance is None:
        D = np.linalg.norm(previous[:, None, :] - current[None, :, :], axis=2)
        D /= np.maximum(np.linalg.norm(previous, axis=1), 1e-300)[:, None]
    else:
        D = distance
    np.fill_diagonal(D, np.inf)
    best = D.argmin(axis=1)
    best_d = D[np.arange(n), best]
    first = int(best_d.argmax())
    others = np.delete(best_d, first)
    _check(name, float(others.max()), tol, checks)
    successor = np.full(n, -1)
    for k in range(n):
        if k != first:
            if successor[best[k]] != -1:
                raise _Violation("the predecessor links do not form one chain")
            successor[best[k]] = k
    order = [first]
    while successor[order[-1]] != -1 and len(order) <= n:
        order.append(int(successor[order[-1]]))
    if len(order) != n:
        raise _Violation("the predecessor links do not form one chain")
    return np.array(order)


def _sequential_biased(rounds, items, params, tol):
    """Sequential order, biased model: e_k, u_k per row, time order from the chain, b_0 from two rounds."""
    _need_rounds(rounds, 2, "the user bias is fixed by the link between two rounds")
    f, n, checks = params.factors, items.size, {}
    rho = 1.0 - 2.0 * (params.lr / n) * params.reg
    per_round = []
    for k, obs in enumerate(rounds[:2]):
        g, Vr = _rows(obs, items, params)
        e = -g[:, f] / 2.0
        if np.any(e == 0):
            raise _Violation("a residual is exactly zero: its row carries no direction")
        u_after = -g[:, :f] / (2.0 * e[:, None])
        u_before = (u_after - (2.0 * params.lr / n) * e[:, None] * Vr[:, :f]) / rho
        order = _chain_order(u_after, u_before, tol, checks, f"chain_residual_round{k + 1}")
        per_round.append((order, e, u_after, u_before, Vr))
    (o1, e1, ua1, ub1, V1), (o2, e2, ua2, ub2, V2) = per_round
    if not np.array_equal(o1, o2):
        raise _Violation("the recovered time order differs between rounds")
    _check("round_link_residual", _rel(ub2[o2[0]] - ua1[o1[-1]], ua1[o1[-1]]), tol, checks)
    # b_(k-1) = rho^(k-1) b_0 + beta_(k-1), beta_k = rho beta_(k-1) + (2 gamma / n) e_k  (in time order)
    powers = rho ** np.arange(n)
    beta1 = _bias_drift(e1[o1], rho, params.lr / n)
    beta2 = _bias_drift(e2[o2], rho, params.lr / n)
    base1 = (e1 + np.einsum("ij,ij->i", ub1, V1[:, :f]) + V1[:, f + 1])[o1] + beta1[:-1]
    base2 = (e2 + np.einsum("ij,ij->i", ub2, V2[:, :f]) + V2[:, f + 1])[o2] + beta2[:-1]
    # round 2 starts from b_0' = rho^n b_0 + beta1[n]: base1 + powers b_0 = base2 + powers (rho^n b_0 + beta1[n])
    coeff = powers * (1.0 - rho**n)
    target = base2 + powers * beta1[-1] - base1
    b0 = float(coeff @ target / (coeff @ coeff)) if params.reg > 0 else _initial_bias(rounds)
    _check("bias_link_spread", float(np.ptp(target - coeff * b0)) / max(1.0, float(np.abs(target).max())),
           tol, checks)
    ratings = np.empty(n)
    ratings[o1] = base1 + powers * b0 + params.mu
    return ratings, np.r_[ub1[o1[0]], b0, 1.0], checks


def _bias_drift(e_ordered: np.ndarray, rho: float, step: float) -> np.ndarray:
    """beta_0 = 0, beta_k = rho beta_(k-1) + 2 step e_k (the known part of b_k)."""
    beta = np.zeros(e_ordered.size + 1)
    for k, e in enumerate(e_ordered):
        beta[k + 1] = rho * beta[k] + 2.0 * step * e
    return beta


def _span_distance(h: np.ndarray, Vr: np.ndarray) -> np.ndarray:
    """D[k, j] = distance of h_j from span(h_k, v_k) (h_(k-1) lies in it)."""
    n = h.shape[0]
    D = np.empty((n, n))
    for k in range(n):
        q, _ = np.linalg.qr(np.column_stack([h[k], Vr[k]]))
        proj = h @ q
        D[k] = np.sqrt(np.maximum(0.0, 1.0 - np.sum(proj**2, axis=1)))
    return D


def _sequential_unbiased(rounds, items, params, tol):
    """Sequential order, unbiased model: pairwise linear systems along the recovered chain."""
    if params.factors < 2:
        raise _Violation("needs at least 2 latent factors (d equations in 2 unknowns)")
    n, checks = items.size, {}
    if n == 1:
        _need_rounds(rounds, 2, "a single rating needs the next round's step")
    rho = 1.0 - 2.0 * (params.lr / n) * params.reg
    steps_h, steps_c, steps_v = [], [], []
    orders = []
    for k, obs in enumerate(rounds[:2]):
        g, Vr = _rows(obs, items, params)
        c = np.linalg.norm(g, axis=1)
        if np.any(c == 0):
            raise _Violation("a gradient row is zero")
        h = g / c[:, None]
        order = _chain_order(h, h, tol, checks, f"chain_residual_round{k + 1}",
                             distance=_span_distance(h, Vr))
        orders.append(order)
        steps_h.append(h[order])
        steps_c.append(c[order])
        steps_v.append(Vr[order])
    if len(orders) == 2 and not np.array_equal(orders[0], orders[1]):
        raise _Violation("the recovered time order differs between rounds")
    H, C, Vs = np.vstack(steps_h), np.concatenate(steps_c), np.vstack(steps_v)
    K = H.shape[0]
    x, y = np.empty(K), np.empty(K)
    worst = 0.0
    for k in range(1, K):
        A = np.column_stack([H[k], -rho * H[k - 1]])
        rhs = -(params.lr / n) * C[k] * Vs[k]
        sol, *_ = np.linalg.lstsq(A, rhs, rcond=None)
        x[k], y[k] = sol
        worst = max(worst, _rel(A @ sol - rhs, rhs))
    _check("pair_residual", worst, tol, checks)
    if not np.all(x[1:] > 0):
        raise _Violation("some s_k^2 is not positive")
    s = np.empty(K)
    s[1] = np.sqrt(x[1])
    s[0] = y[1] / s[1]
    for k in range(2, K):
        s[k] = np.sign(y[k] * s[k - 1]) * np.sqrt(x[k])
    candidates = []
    for sign in (1.0, -1.0):
        ss = sign * s
        e = -C[:n] / (2.0 * ss[:n])
        u = ss[:n, None] * H[:n]
        u0 = (u[0] - (2.0 * params.lr / n) * e[0] * Vs[0]) / rho
        u_prev = np.vstack([u0, u[:-1]])
        ordered = e + params.mu + np.einsum("ij,ij->i", u_prev, Vs[:n])
        candidates.append((_scale_misfit(ordered, params), ordered, u0))
    candidates.sort(key=lambda t: t[0])
    checks["sign_misfit"], checks["other_sign_misfit"] = candidates[0][0], candidates[1][0]
    _, ordered, u0 = candidates[0]
    ratings = np.empty(n)
    ratings[orders[0]] = ordered
    return ratings, u0, checks


_SOLVERS = {
    ("paper", True): _paper_biased,
    ("paper", False): _paper_unbiased,
    ("sequential", True): _sequential_biased,
    ("sequential", False): _sequential_unbiased,
}
