"""Rating-prediction metrics."""

from __future__ import annotations

import numpy as np


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error  sqrt(mean((p - r)^2))."""
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error  mean(|p - r|)."""
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))
