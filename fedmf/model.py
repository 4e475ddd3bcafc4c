"""The matrix-factorization model and the FedMF client's local update (Chai et al. 2019, §3).

Prediction, with the global training mean mu (public, aggregated once) and, when
``biases`` is on, a private user bias b_i and a federated item bias c_j:

    r_hat_ij = mu + <u_i, v_j> + b_i + c_j

Biases are stored as two extra coordinates, u'_i = [u_i, b_i, 1] and
v'_j = [v_j, 1, c_j], so r_hat = mu + <u'_i, v'_j>; the constant coordinates are never
updated (``user_mask`` / ``item_mask`` say which coordinates train).

Local update of user i with ratings R_i, n_i = |R_i|, learning rate gamma,
regularization lambda (the paper's objective, per-user normalised):

* ``order="paper"`` (paper's Alg. 1, both gradients at the old iterate):
      e_j   = r_ij - mu - <u'_i, v'_j>                        for j in R_i
      u'_i <- u'_i - gamma * [ -(2/n_i) sum_j e_j v'_j + 2 lambda u'_i ]   (user coords)
      G_j   = -2 e_j u'_i(old) + 2 lambda v'_j                 (item coords, uploaded)
* ``order="sequential"`` (the public FedMF code): for each rating k in time order,
      e_k   = r_ik - mu - <u'_i, v'_k>
      u'_i <- u'_i - (gamma/n_i) * [ -2 e_k v'_k + 2 lambda u'_i ]
      G_k   = -2 e_k u'_i(new) + 2 lambda v'_k

The server applies  v'_j <- v'_j - gamma * (sum_i G_ij) / n_j  on the item coordinates,
where n_j is item j's number of ratings (aggregated once, like mu). Dividing by
n_i and n_j keeps one learning rate stable for heavy and light users and items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

ORDERS = ("paper", "sequential")


@dataclass(frozen=True)
class ModelConfig:
    """Model and optimiser hyperparameters (public: the server and attackers know them)."""

    factors: int = 10
    lr: float = 0.35
    reg: float = 0.12
    biases: bool = True
    order: str = "paper"
    init_std: float = 0.1

    def __post_init__(self) -> None:
        if self.factors < 1:
            raise ConfigError(f"factors must be >= 1, got {self.factors}")
        if not self.lr > 0 or not np.isfinite(self.lr):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.reg < 0:
            raise ConfigError(f"reg must be >= 0, got {self.reg}")
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {ORDERS}, got {self.order!r}")

    @property
    def width(self) -> int:
        """Stored coordinates per vector (factors, plus 2 with biases)."""
        return self.factors + 2 if self.biases else self.factors

    @property
    def user_mask(self) -> np.ndarray:
        mask = np.ones(self.width, bool)
        if self.biases:
            mask[-1] = False  # the constant 1 that multiplies c_j
        return mask

    @property
    def item_mask(self) -> np.ndarray:
        mask = np.ones(self.width, bool)
        if self.biases:
            mask[-2] = False  # the constant 1 that multiplies b_i
        return mask

    @property
    def row_length(self) -> int:
        """Uploaded values per item (the trainable item coordinates)."""
        return int(self.item_mask.sum())


def init_users(config: ModelConfig, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """Random user vectors (never all-equal: the public code's 0.01 init keeps rank 1)."""
    U = rng.normal(0.0, config.init_std, (n_users, config.width))
    if config.biases:
        U[:, -2] = 0.0  # b_i
        U[:, -1] = 1.0
    return U


def init_items(config: ModelConfig, n_items: int, rng: np.random.Generator) -> np.ndarray:
    V = rng.normal(0.0, config.init_std, (n_items, config.width))
    if config.biases:
        V[:, -2] = 1.0
        V[:, -1] = 0.0  # c_j
    return V


def local_update(
    config: ModelConfig,
    mu: float,
    u: np.ndarray,
    V: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One round of user i: return (new u'_i, item gradient rows G for ``items``).

    ``items`` / ``ratings`` are the user's training ratings, in time order for
    ``order="sequential"``. G has one row per rated item over the item coordinates.
    """
    if items.size == 0:
        return u.copy(), np.zeros((0, config.row_length))
    if config.order == "paper":
        return _paper_update(config, mu, u, V[items], ratings)
    return _sequential_update(config, mu, u, V[items], ratings)


def _paper_update(config, mu, u, Vr, ratings):
    errors = ratings - mu - Vr @ u
    grad_u = -(2.0 / ratings.size) * (errors @ Vr) + 2.0 * config.reg * u
    new_u = u - config.lr * grad_u * config.user_mask
    G = -2.0 * errors[:, None] * u[None, :] + 2.0 * config.reg * Vr
    return new_u, G[:, config.item_mask]


def _sequential_update(config, mu, u, Vr, ratings):
    step = config.lr / ratings.size
    mask = config.user_mask
    G = np.empty_like(Vr)
    u = u.copy()
    for k in range(ratings.size):
        e = ratings[k] - mu - Vr[k] @ u
        u -= step * (-2.0 * e * Vr[k] + 2.0 * config.reg * u) * mask
        G[k] = -2.0 * e * u + 2.0 * config.reg * Vr[k]
    return u, G[:, config.item_mask]


def apply_item_update(
    config: ModelConfig, V: np.ndarray, aggregate_rows: np.ndarray, item_counts: np.ndarray
) -> np.ndarray:
    """Server step  v'_j <- v'_j - gamma * A_j / max(n_j, 1)  on the item coordinates."""
    V = V.copy()
    scale = config.lr / np.maximum(item_counts, 1)[:, None]
    V[:, config.item_mask] -= scale * aggregate_rows
    return V


def predict(mu: float, U: np.ndarray, V: np.ndarray, users: np.ndarray, items: np.ndarray,
            scale: tuple[float, float]) -> np.ndarray:
    """r_hat = mu + <u'_i, v'_j>, clipped to the dataset's rating scale (lowest, highest)."""
    return np.clip(mu + np.einsum("ij,ij->i", U[users], V[items]), *scale)
