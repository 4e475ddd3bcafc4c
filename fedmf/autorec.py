"""User-based AutoRec as in PersonalFR (Le et al. 2022; reference note §3.2), numpy only.

Network (a row x of the user's training ratings over the items, 0 where missing)::

    h1 = tanh(x W1 + b1)          encoder, W1: items x 256   (private in PersonalFR)
    h2 = tanh(h1 W2 + b2)         encoder, W2: 256 x 128
    z  = h2 * mask / (1 - p)      dropout p = 0.5 on the code (training only)
    h3 = tanh(z W3 + b3)          decoder, W3: 128 x 256     (federated)
    y  = h3 W4^T + b4             decoder, W4: items x 256 (one row per item), raw scores

Losses over the observed target entries O only (unobserved items are no negatives):

* explicit:  L = sum_O (y - r)^2 / |O|                              (MSE)
* implicit:  L = sum_O [softplus(y) - t y] / |O|, t = [r >= 3.5]     (BCE with logits)

Item rows. W1 and W4 have one row per item, and a row only meets the data through
that item: the gradient of W1[j] is zero unless item j is in the input, and of
(W4[j], b4[j]) unless j is an observed target. So every function here works on the
rows of an item subset ``S`` (the client's items); rows outside S have zero gradient
(see :mod:`fedmf.personalfr` for how the optimizer treats them exactly).

Parameters live in one flat float32 vector (:class:`Layout`), so the optimizer updates
every tensor with a few vector operations. Gradients are written by hand and checked
against finite differences in ``tests/test_personalfr.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import ConfigError

HIDDEN = 256
CODE = 128
DROPOUT = 0.5
IMPLICIT_THRESHOLD = 3.5
LOSSES = ("explicit", "implicit")

#: tensor names in flat order; encoder first, decoder last
ENCODER = ("W1", "b1", "W2", "b2")
DECODER = ("W3", "b3", "W4", "b4")


@dataclass(frozen=True)
class Layout:
    """Offsets of each tensor in a flat parameter vector over ``rows`` item rows."""

    rows: int

    def shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.rows
        return {"W1": (s, HIDDEN), "b1": (HIDDEN,), "W2": (HIDDEN, CODE), "b2": (CODE,),
                "W3": (CODE, HIDDEN), "b3": (HIDDEN,), "W4": (s, HIDDEN), "b4": (s,)}

    def offsets(self) -> dict[str, tuple[int, int]]:
        return _offsets(self.rows)

    @property
    def size(self) -> int:
        return self.offsets()["b4"][1]

    @property
    def encoder_size(self) -> int:
        return self.offsets()["b2"][1]

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views (no copies) into ``flat``."""
        shapes = self.shapes()
        return {k: flat[a:b].reshape(shapes[k]) for k, (a, b) in self.offsets().items()}


@lru_cache(maxsize=4096)
def _offsets(rows: int) -> dict[str, tuple[int, int]]:
    out, start = {}, 0
    for name, shape in Layout(rows).shapes().items():
        size = int(np.prod(shape))
        out[name] = (start, start + size)
        start += size
    return out


def decoder_size(n_items: int) -> int:
    """Length of the federated decoder vector: 128*256 + 256 + 256*M + M."""
    return CODE * HIDDEN + HIDDEN + HIDDEN * n_items + n_items


def xavier_init(n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Flat parameters over all items: Xavier-uniform weights, zero biases.

    Bound sqrt(6 / (fan_in + fan_out)) per layer (Glorot & Bengio 2010), as
    ``nn.init.xavier_uniform_`` in the PersonalFR code.
    """
    layout = Layout(n_items)
    flat = np.zeros(layout.size, np.float32)
    v = layout.views(flat)
    for name, (fan_in, fan_out) in {"W1": (n_items, HIDDEN), "W2": (HIDDEN, CODE),
                                    "W3": (CODE, HIDDEN), "W4": (HIDDEN, n_items)}.items():
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        v[name][...] = rng.uniform(-bound, bound, v[name].shape)
    return flat


def targets(ratings: np.ndarray, loss: str) -> np.ndarray:
    """The training/target values of observed entries: ratings, or binarised labels."""
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
    r = np.asarray(ratings, np.float32)
    return r if loss == "explicit" else (r >= IMPLICIT_THRESHOLD).astype(np.float32)


def encode(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h1, h2): the encoder's hidden layer and code for input rows ``x`` (B x S)."""
    h1 = np.tanh(x @ p["W1"] + p["b1"])
    return h1, np.tanh(h1 @ p["W2"] + p["b2"])


def decode_hidden(p: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """h3 = tanh(z W3 + b3)."""
    return np.tanh(z @ p["W3"] + p["b3"])


def loss_and_grad(
    flat: np.ndarray,
    layout: Layout,
    x: np.ndarray,
    observed: np.ndarray,
    loss: str,
    keep: np.ndarray | None,
    grad: np.ndarray,
) -> float:
    """Loss of one batch and its gradient, written into ``grad`` (same layout as ``flat``).

    ``x`` (B x S) is the input and the target (reconstruction of the training ratings,
    as in the code), ``observed`` (B x S, bool) marks the observed entries, ``keep``
    (B x 128, 0/1) is the dropout mask or None for no dropout.
    """
    p, g = layout.views(flat), layout.views(grad)
    h1, h2 = encode(p, x)
    scale = flat.dtype.type(1.0 / (1.0 - DROPOUT))
    z = h2 if keep is None else h2 * keep * scale
    h3 = decode_hidden(p, z)
    y = h3 @ p["W4"].T + p["b4"]
    n_obs = max(int(observed.sum()), 1)
    if loss == "explicit":
        diff = np.where(observed, y - x, 0.0).astype(y.dtype)
        value = float((diff * diff).sum() / n_obs)
        g_y = diff * y.dtype.type(2.0 / n_obs)
    else:
        bce = np.logaddexp(0.0, y) - x * y
        value = float(np.where(observed, bce, 0.0).sum() / n_obs)
        sig = 0.5 * (1.0 + np.tanh(0.5 * y))  # stable sigmoid
        g_y = np.where(observed, sig - x, 0.0).astype(y.dtype) * y.dtype.type(1.0 / n_obs)
    g["W4"][...] = g_y.T @ h3
    g["b4"][...] = g_y.sum(0)
    g_a3 = (g_y @ p["W4"]) * (1.0 - h3 * h3)
    g["W3"][...] = z.T @ g_a3
    g["b3"][...] = g_a3.sum(0)
    g_z = g_a3 @ p["W3"].T
    g_h2 = g_z if keep is None else g_z * keep * scale
    g_a2 = g_h2 * (1.0 - h2 * h2)
    g["W2"][...] = h1.T @ g_a2
    g["b2"][...] = g_a2.sum(0)
    g_a1 = (g_a2 @ p["W2"].T) * (1.0 - h1 * h1)
    g["W1"][...] = x.T @ g_a1
    g["b1"][...] = g_a1.sum(0)
    return value
