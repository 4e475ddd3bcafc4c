"""Joint: the PersonalFR autoencoder trained on centralized data (the accuracy peer).

As the PersonalFR code's joint mode [V-code ``utils.process_control``]: one model for
all users, Adam with lr 1e-3 and no lr schedule, batches of users (100 for ML-100K),
weight decay 5e-4 added to the gradient as torch's Adam does. [R] We clip the gradient
to global norm 1 as in the federated loop (not checked in ``train_joint.py``).
The same network, losses, initialisation and test metric as :mod:`fedmf.personalfr`.
"""

from __future__ import annotations

import time

import numpy as np

from .autorec import CODE, Layout, encode, loss_and_grad, targets, xavier_init
from .data import Split
from .personalfr import clip_global_norm, evaluate


def dense_values(split: Split, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Users x items training values and their observed mask."""
    train = split.train
    values = np.zeros((train.n_users, train.n_items), np.float32)
    observed = np.zeros((train.n_users, train.n_items), bool)
    values[train.users, train.items] = targets(train.ratings, loss)
    observed[train.users, train.items] = True
    return values, observed


def train_joint(split: Split, loss: str, epochs: int, *, batch_users: int = 100, lr: float = 1e-3,
                weight_decay: float = 5e-4, clip_norm: float = 1.0, seed: int = 0) -> dict:
    """Train centrally; return the best-on-test and last metric and the per-epoch history."""
    rng = np.random.default_rng(seed)
    n_items = split.train.n_items
    layout = Layout(n_items)
    flat = xavier_init(n_items, rng)
    values, observed = dense_values(split, loss)
    m, v, grad = (np.zeros_like(flat) for _ in range(3))
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(values.shape[0])
        for start in range(0, order.size, batch_users):
            b = order[start : start + batch_users]
            keep = (rng.random((b.size, CODE)) >= 0.5).astype(np.float32)
            loss_and_grad(flat, layout, values[b], observed[b], loss, keep, grad)
            clip_global_norm(grad, clip_norm)
            grad += np.float32(weight_decay) * flat
            step += 1
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * grad * grad
            denom = np.sqrt(v / (1 - b2**step)) + eps
            flat -= np.float32(lr / (1 - b1**step)) * m / denom
        codes = encode(layout.views(flat), values)[1]
        score = evaluate(split, loss, codes, flat)
        history.append({"epoch": epoch, "metric": score.value, "seconds": time.perf_counter() - t0})
    key = "test_rmse" if loss == "explicit" else "ndcg_at_10"
    pick = min if loss == "explicit" else max
    best = pick(history, key=lambda r: r["metric"])
    return {key: best["metric"], "best_epoch": best["epoch"],
            "last_round": {key: history[-1]["metric"], "epoch": history[-1]["epoch"]},
            "epochs": epochs, "batch_users": batch_users, "lr": lr,
            "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])),
            "history": history}
