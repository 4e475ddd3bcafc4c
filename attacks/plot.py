"""Scatter plot of reconstructed vs true ratings, one panel per backend (PNG).

Users the attack could not reconstruct get the no-knowledge guess (global mean), so a
protected backend shows as a flat line at mu; the panel title says how many.

matplotlib is imported lazily: it is in the ``bench`` extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmf.errors import ConfigError

from .evaluate import Guesses


def plot_reconstruction(panels: list[tuple[str, Guesses, dict]], path: Path, *,
                        rating_scale: tuple[float, float], seed: int = 0, max_points: int = 20_000) -> Path:
    """Write a PNG with one scatter panel (true rating vs reconstruction) per backend.

    ``panels`` holds (title, guesses, report) triples; points are jittered horizontally
    so the rating levels of ``rating_scale`` (lo, hi) stay readable, and subsampled to
    ``max_points``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as exc:
        raise ConfigError("plotting needs matplotlib: pip install -e .[bench]") from exc
    rng = np.random.default_rng(seed)
    lo, hi = rating_scale
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    for ax, (title, guesses, report) in zip(axes[0], panels):
        truth = np.concatenate(guesses.true_ratings)
        est = np.clip(np.concatenate(guesses.estimates), lo, hi)
        keep = rng.permutation(truth.size)[:max_points]
        jitter = rng.uniform(-0.2, 0.2, keep.size)
        ax.scatter(truth[keep] + jitter, est[keep], s=3, alpha=0.25)
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax.set_xlabel("true rating (jittered)")
        ax.set_ylabel("reconstructed rating")
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_ylim(lo - 0.5, hi + 0.5)
        ax.set_title(f"{title}\nexact {report['exact_fraction']:.3f}, RMSE "
                     f"{report['reconstruction_rmse']:.3f} (baseline "
                     f"{report['baseline']['exact_fraction']:.3f}, "
                     f"{report['baseline']['reconstruction_rmse']:.3f})\nusers: "
                     f"{_statuses(report)}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _statuses(report: dict) -> str:
    """e.g. "943 recovered" or "943 assumptions_violated (global-mean fallback)"."""
    parts = [f"{n} {status}" for status, n in report["status_counts"].items()]
    fallback = any(status != "recovered" for status in report["status_counts"])
    return ", ".join(parts) + (" (global-mean fallback)" if fallback else "")
