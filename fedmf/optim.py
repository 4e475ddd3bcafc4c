"""Server-side optimisers on a parameter matrix: plain SGD and Adam (Kingma and Ba 2015).

with the step size eta_t = eta decay^(t-1) at step t (``decay`` = 1: constant).

    SGD:   theta <- theta - eta_t g
    Adam:  m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
           theta <- theta - eta_t m_hat / (sqrt(v_hat) + eps),
           m_hat = m / (1 - b1^t),   v_hat = v / (1 - b2^t)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError

OPTIMIZERS = ("adam", "sgd")


@dataclass
class ServerOptimizer:
    """One optimiser state for one parameter matrix; :meth:`step` returns the new matrix."""

    kind: str = "adam"
    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decay: float = 1.0
    t: int = 0
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.kind!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ConfigError(f"need 0 <= beta1, beta2 < 1 and eps > 0; got {self.beta1}, {self.beta2}, {self.eps}")
        if not 0 < self.decay <= 1:
            raise ConfigError(f"decay must be in (0, 1], got {self.decay}")

    def step(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        lr = self.lr * self.decay ** (self.t - 1)
        if self.kind == "sgd":
            return theta - lr * grad
        if self.m is None:
            self.m, self.v = np.zeros_like(theta), np.zeros_like(theta)
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad**2
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        return theta - lr * m_hat / (np.sqrt(v_hat) + self.eps)
