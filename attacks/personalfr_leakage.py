"""What one PersonalFR decoder upload tells an honest-but-curious server.

Rated items. In a client's decoder update Delta = theta_c - theta, the output-layer row
of an item j the client holds no rating for has zero gradient in every local step, so
weight decay and momentum alone move it: Delta_j = (alpha - 1) theta_j with one scalar
alpha for every such row (:func:`fedmf.personalfr.idle_row_map`). The server knows
theta (it sent it). For each row v_j = (Delta W4_j, Delta b4_j) and g_j = (W4_j, b4_j)
it computes the ratio <v_j, g_j> / <g_j, g_j>, takes kappa = the ratio most rows share
(idle rows agree to rounding; rated rows all differ) and flags j as rated when the
relative residual ||v_j - kappa g_j|| / ||g_j|| exceeds ``threshold`` (1e-5: idle rows
sit at float32 rounding, about 1e-7). This is the "non-zero output-layer gradient
rows" leak of a sparse or plain upload; under pairwise masking the per-client view is
uniform noise and every row looks active.

Ratings (explicit data). The bias update of a rated row is the lr-weighted sum of
2 (r_j - y_j) / |O| over the local steps: larger for higher ratings. The server does not
hold the private encoder, so it cannot compute y_j; it standardises the residual bias
updates over the flagged rows and maps them onto the public rating mean and spread,
r_hat_j = mean + std * z_j [R]. Baseline: the mean for every rated item.

Precision and recall are averaged over the attacked clients (each client's first
upload), beside the no-knowledge baseline: guessing items at random has precision
|I_u| / M (the client's share of items) whatever it guesses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fedmf.autorec import CODE, HIDDEN
from fedmf.data import Split
from fedmf.personalfr import FedConfig, make_engine
from secagg import make_backend

THRESHOLD = 1e-5


def output_rows(decoder: np.ndarray, n_items: int) -> np.ndarray:
    """The rows (W4_j, b4_j), M x 257, of a flat decoder vector (W3, b3, W4, b4)."""
    start = CODE * HIDDEN + HIDDEN
    w4 = decoder[start : start + HIDDEN * n_items].reshape(n_items, HIDDEN)
    b4 = decoder[start + HIDDEN * n_items :]
    return np.column_stack([w4, b4]).astype(np.float64)


def idle_ratio(v: np.ndarray, g: np.ndarray) -> float:
    """kappa: the ratio <v_j, g_j> / <g_j, g_j> shared (within 1e-9 relative) by most rows."""
    ratio = np.einsum("ij,ij->i", v, g) / np.maximum(np.einsum("ij,ij->i", g, g), 1e-30)
    order = np.sort(ratio)
    tol = 1e-9 * max(float(np.abs(ratio).max()), 1e-30)
    count = np.searchsorted(order, ratio + tol, "right") - np.searchsorted(order, ratio - tol, "left")
    return float(ratio[np.argmax(count)])


def infer_rated_items(update: np.ndarray, global_decoder: np.ndarray, n_items: int,
                      threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, residual): items whose row moved other than by weight decay and momentum."""
    v, g = output_rows(update, n_items), output_rows(global_decoder, n_items)
    gg = np.einsum("ij,ij->i", g, g)
    kappa = idle_ratio(v, g)
    residual = np.linalg.norm(v - kappa * g, axis=1) / np.sqrt(np.maximum(gg, 1e-30))
    return residual > threshold, residual


def estimate_ratings(update: np.ndarray, global_decoder: np.ndarray, n_items: int,
                     flagged: np.ndarray, mean: float, std: float) -> np.ndarray:
    """r_hat for the flagged items from their residual bias updates (see the module doc)."""
    v, g = output_rows(update, n_items), output_rows(global_decoder, n_items)
    kappa = idle_ratio(v, g)
    bias = (v[:, -1] - kappa * g[:, -1])[flagged]
    if bias.size < 2 or bias.std() == 0:
        return np.full(bias.size, mean)
    return np.clip(mean + std * (bias - bias.mean()) / bias.std(), 1.0, 5.0)


@dataclass
class LeakageReport:
    backend: str
    clients_attacked: int
    precision: float
    recall: float
    baseline_precision: float
    baseline_recall: float
    rating_rmse: float | None
    rating_baseline_rmse: float | None
    rating_correlation: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_attack(split: Split, backend: str = "plain", *, config: FedConfig | None = None,
               clients: int | None = None, rounds: int = 3, seed: int = 0,
               backend_options: dict | None = None, threshold: float = THRESHOLD) -> LeakageReport:
    """Train ``rounds`` rounds through ``backend`` and attack each client's first upload."""
    cfg = config or FedConfig()
    engine_backend = make_backend(backend, record_view=True, **({"out_of_range": "clip"} | (backend_options or {})))
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    engine = make_engine(split, engine_backend, config=cfg, clients=clients, seed=seed,
                         eval_every=rounds + 1)
    trainer = engine.trainer
    enc = trainer.global_flat.size - trainer.upload_layout().length
    sent = {"decoder": trainer.global_flat[enc:].copy()}

    def observer(rnd, result, uploads, scale):
        for cid, view in result.view.per_client.items():
            if cid not in seen:
                seen[cid] = (np.asarray(view) * scale, sent["decoder"])
        sent["decoder"] = trainer.global_flat[enc:].copy()

    engine.observer = observer
    for _ in range(rounds):
        engine.run_round()
    return score(split, trainer, seen, engine_backend.name, threshold)


def score(split: Split, trainer, seen: dict, backend_name: str, threshold: float) -> LeakageReport:
    """Precision/recall of the rated sets and the rating estimate over the attacked clients."""
    m = split.train.n_items
    ratings = split.train.ratings
    mean, std = float(ratings.mean()), float(ratings.std())
    prec, rec, base_p, base_r, err, base_err, truth_all, est_all = ([] for _ in range(8))
    for cid, (update, decoder) in seen.items():
        data = trainer.data[cid]
        truth = np.zeros(m, bool)
        truth[data.items] = True
        flagged, _ = infer_rated_items(update, decoder, m, threshold)
        hits = int((flagged & truth).sum())
        prec.append(hits / max(int(flagged.sum()), 1))
        rec.append(hits / int(truth.sum()))
        base_p.append(truth.mean())
        base_r.append(flagged.mean())
        if trainer.cfg.loss == "explicit" and len(data.users) == 1 and hits:
            est = estimate_ratings(update, decoder, m, flagged, mean, std)
            true_r = np.zeros(m)
            true_r[data.items] = data.values[0]
            both = truth[flagged]
            err.append(np.mean((est[both] - true_r[flagged][both]) ** 2))
            base_err.append(np.mean((mean - true_r[flagged][both]) ** 2))
            truth_all.append(true_r[flagged][both])
            est_all.append(est[both])
    rating = bool(err)
    corr = float(np.corrcoef(np.concatenate(truth_all), np.concatenate(est_all))[0, 1]) if rating else None
    return LeakageReport(
        backend=backend_name, clients_attacked=len(seen),
        precision=float(np.mean(prec)), recall=float(np.mean(rec)),
        baseline_precision=float(np.mean(base_p)), baseline_recall=float(np.mean(base_r)),
        rating_rmse=float(np.sqrt(np.mean(err))) if rating else None,
        rating_baseline_rmse=float(np.sqrt(np.mean(base_err))) if rating else None,
        rating_correlation=corr,
    )
