"""Local differential privacy noise drawn from the operating system's CSPRNG.

Laplace(0, scale) by inverse CDF: with U uniform on (0, 1) and V = U - 1/2,
X = -scale * sign(V) * ln(1 - 2|V|). U is built from 53 random bits of ``os.urandom``
(never numpy's generator: this noise protects data), offset by half an ulp so it is
never 0 or 1.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .errors import ConfigError


def csprng_uniform(n: int) -> np.ndarray:
    """``n`` uniforms on the open interval (0, 1), 53 bits each, from ``os.urandom``."""
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def laplace_noise(n: int, scale: float) -> np.ndarray:
    """``n`` draws of Laplace(0, ``scale``) (zeros when ``scale`` is 0), from the CSPRNG."""
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0):
        raise ConfigError(f"Laplace scale must be a finite number >= 0, got {scale!r}")
    if scale == 0:
        return np.zeros(n)
    v = csprng_uniform(n) - 0.5
    return -scale * np.sign(v) * np.log1p(-2.0 * np.abs(v))
