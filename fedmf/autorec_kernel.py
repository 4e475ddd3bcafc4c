"""A client's whole local training of the AutoRec (:mod:`fedmf.autorec`) in one numba call.

:func:`train_local` runs every local step of one client: the forward and backward pass
of :func:`fedmf.autorec.loss_and_grad` over a batch, the global-norm clip of
:func:`fedmf.personalfr.clip_global_norm` and the Nesterov step of
:func:`fedmf.personalfr.nesterov_step`, with the batches and dropout masks drawn by the
caller (so the random stream is the one of the numpy path). It exists for speed: with
one user per client (|S| ~ 100 rows) the numpy path spends most of its ~0.7 ms per step
(profiled on a loaded host) in per-call overhead of a dozen small array operations.
Same float32 arithmetic, another summation order: results agree with the numpy path
to float32 rounding, not bit for bit (``tests/test_personalfr.py``).

:func:`delta_rows` writes theta_c - theta of one item-row tensor in float64 in one pass
(the closed-form idle rows scaled by alpha - 1, the client's rows from its training),
bit for bit as the numpy expressions (alpha - 1.0) * theta and local - theta in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .autorec import CODE, DROPOUT, HIDDEN

_FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_FAST)
def _tanh_layer(x, W, bias, out):
    """out = tanh(x W + bias) for one row x (its zero entries skipped: sparse inputs)."""
    a = bias.copy()
    for i in range(x.shape[0]):
        xi = x[i]
        if xi != 0:
            for k in range(W.shape[1]):
                a[k] += xi * W[i, k]
    for k in range(out.shape[0]):
        out[k] = np.tanh(a[k])


@njit(cache=True, fastmath=_FAST)
def _linear_backward(x, g, W, gW, gb, gx):
    """Back through y = x W + b for a batch: gW = x^T g, gb = sum over the batch of g,
    gx = g W^T (before the input's activation), written into ``gW``, ``gb`` and ``gx``."""
    gW[:, :] = 0.0
    gb[:] = 0.0
    for b in range(x.shape[0]):
        for k in range(g.shape[1]):
            gb[k] += g[b, k]
        for i in range(x.shape[1]):
            xi = x[b, i]
            acc = np.float32(0.0)
            for k in range(g.shape[1]):
                gW[i, k] += xi * g[b, k]
                acc += g[b, k] * W[i, k]
            gx[b, i] = acc


@njit(cache=True, fastmath=_FAST)
def _step(p, g, x, obs, keep, implicit):
    """loss_and_grad of one batch (rows of x) into g; p and g are flat over |S| rows."""
    S, H, C = x.shape[1], HIDDEN, CODE
    B = x.shape[0]
    o = 0
    W1 = p[o : o + S * H].reshape(S, H); gW1 = g[o : o + S * H].reshape(S, H); o += S * H
    b1 = p[o : o + H]; gb1 = g[o : o + H]; o += H
    W2 = p[o : o + H * C].reshape(H, C); gW2 = g[o : o + H * C].reshape(H, C); o += H * C
    b2 = p[o : o + C]; gb2 = g[o : o + C]; o += C
    W3 = p[o : o + C * H].reshape(C, H); gW3 = g[o : o + C * H].reshape(C, H); o += C * H
    b3 = p[o : o + H]; gb3 = g[o : o + H]; o += H
    W4 = p[o : o + S * H].reshape(S, H); gW4 = g[o : o + S * H].reshape(S, H); o += S * H
    b4 = p[o : o + S]; gb4 = g[o : o + S]
    scale = np.float32(1.0 / (1.0 - DROPOUT))
    h1 = np.empty((B, H), np.float32)
    h2 = np.empty((B, C), np.float32)
    z = np.empty((B, C), np.float32)
    h3 = np.empty((B, H), np.float32)
    gy = np.zeros((B, S), np.float32)
    n_obs = 0
    for b in range(B):
        for s in range(S):
            if obs[b, s]:
                n_obs += 1
    n_obs = max(n_obs, 1)
    value = 0.0
    for b in range(B):
        _tanh_layer(x[b], W1, b1, h1[b])
        _tanh_layer(h1[b], W2, b2, h2[b])
        for k in range(C):
            z[b, k] = h2[b, k] * keep[b, k] * scale
        _tanh_layer(z[b], W3, b3, h3[b])
        for s in range(S):
            if not obs[b, s]:
                continue
            y = b4[s]
            for k in range(H):
                y += h3[b, k] * W4[s, k]
            if implicit:
                value += np.logaddexp(0.0, y) - x[b, s] * y
                gy[b, s] = (np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * y)) - x[b, s]) \
                    * np.float32(1.0 / n_obs)
            else:
                d = y - x[b, s]
                value += d * d
                gy[b, s] = d * np.float32(2.0 / n_obs)
    # output layer and the gradient into h3
    for s in range(S):
        acc = np.float32(0.0)
        for k in range(H):
            gW4[s, k] = 0.0
        for b in range(B):
            gv = gy[b, s]
            acc += gv
            if gv != 0:
                for k in range(H):
                    gW4[s, k] += gv * h3[b, k]
        gb4[s] = acc
    ga3 = np.zeros((B, H), np.float32)
    for b in range(B):
        for s in range(S):
            gv = gy[b, s]
            if gv != 0:
                for k in range(H):
                    ga3[b, k] += gv * W4[s, k]
        for k in range(H):
            ga3[b, k] *= np.float32(1.0) - h3[b, k] * h3[b, k]
    ga2 = np.empty((B, C), np.float32)
    _linear_backward(z, ga3, W3, gW3, gb3, ga2)
    for b in range(B):
        for i in range(C):
            ga2[b, i] = ga2[b, i] * keep[b, i] * scale * (np.float32(1.0) - h2[b, i] * h2[b, i])
    ga1 = np.empty((B, H), np.float32)
    _linear_backward(h1, ga2, W2, gW2, gb2, ga1)
    for b in range(B):
        for j in range(H):
            ga1[b, j] = ga1[b, j] * (np.float32(1.0) - h1[b, j] * h1[b, j])
    gW1[:, :] = 0.0
    gb1[:] = 0.0
    for b in range(B):
        for k in range(H):
            gb1[k] += ga1[b, k]
        for s in range(S):
            xs = x[b, s]
            if xs != 0:
                for k in range(H):
                    gW1[s, k] += xs * ga1[b, k]
    return value / n_obs


@njit(cache=True, fastmath=_FAST)
def train_local(p, buf, values, observed, batches, sizes, keeps, implicit, lr, momentum,
                weight_decay, clip_norm):
    """All local steps of one client in place on p (params) and buf (momentum).

    Step t uses the users ``batches[t, :sizes[t]]`` (rows of values / observed) and the
    dropout masks ``keeps[t, :sizes[t]]`` (0/1, B x 128). Returns the per-step losses.
    """
    g = np.empty_like(p)
    losses = np.empty(batches.shape[0])
    mu, wd, eta = np.float32(momentum), np.float32(weight_decay), np.float32(lr)
    for t in range(batches.shape[0]):
        rows = batches[t, : sizes[t]]
        losses[t] = _step(p, g, values[rows], observed[rows], keeps[t, : sizes[t]], implicit)
        sq = np.float32(0.0)
        for i in range(g.size):
            sq += g[i] * g[i]
        coef = clip_norm / (np.sqrt(np.float64(sq)) + 1e-6)
        c = np.float32(coef) if coef < 1.0 else np.float32(1.0)
        for i in range(p.size):
            d = g[i] * c + wd * p[i]
            buf[i] = buf[i] * mu + d
            p[i] -= eta * (d + mu * buf[i])
    return losses


@njit(cache=True, fastmath={"reassoc", "nsz"})
def delta_rows(glob, items, local, alpha, out):
    """out = theta_c - theta (float64) of a tensor with one row per item (2-D views).

    Rows in ``items`` (sorted) take local - global; the others (alpha - 1) * global.
    Returns max |out| so the caller needs no second pass.
    """
    f = alpha - 1.0
    top = 0.0
    r = 0
    for j in range(glob.shape[0]):
        if r < items.size and items[r] == j:
            for k in range(glob.shape[1]):
                v = np.float64(local[r, k]) - np.float64(glob[j, k])
                out[j, k] = v
                top = max(top, abs(v))
            r += 1
        else:
            for k in range(glob.shape[1]):
                v = f * np.float64(glob[j, k])
                out[j, k] = v
                top = max(top, abs(v))
    return top
