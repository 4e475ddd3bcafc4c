"""Which items did a user interact with? Read from one PFedRec upload (issue 16).

A PFedRec upload is Delta_u = E_u - E (M x K, sent densely). With plain SGD and no
weight decay only the rows of this round's samples change (positives and sampled
negatives), and each batch moves row j by  -lr_item * g_k * w  with
g_k = (p_k - y_k) / B: positives (y = 1) along +w, negatives along -w. The score
function w drifts little within a round, so the touched rows are nearly collinear:

1. touched rows: the non-zero rows of the decoded upload;
2. direction: their first right singular vector v (the server does not know w, so
   the sign of v is unknown);
3. split the touched rows by the sign of their projection on v; the smaller side is
   taken as the positives (each positive is drawn once a round, each with ``n_neg``
   negatives). When all projections share one sign there is no such structure (masked
   noise decodes to one-signed values) and the attacker splits at the median.

Scored against the user's training positives (all of them are touched every round),
beside a no-knowledge baseline: a uniformly random guess of the same size has expected
precision |T_u| / M and recall |G_u| / M. Under SecAgg masking the decoded upload is
uniform noise (every row "touched", the split is a coin flip); under Paillier the
server decodes nothing and the attacker can only guess (a random half of the items).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fedmf.data.implicit import ImplicitSplit
from fedmf.engine import Engine
from fedmf.pfedrec import PFedRecConfig, make_engine


def infer_positives(upload: np.ndarray, n_items: int, dim: int) -> np.ndarray:
    """The items the attack believes user u interacted with, from its decoded upload (model units)."""
    rows = np.asarray(upload, dtype=np.float64).reshape(n_items, dim)
    touched = np.flatnonzero(np.any(rows != 0, axis=1))
    if touched.size < 2:
        return touched
    X = rows[touched]
    projection = X @ np.linalg.svd(X, full_matrices=False)[2][0]
    side = projection > 0
    if side.all() or not side.any():  # no two-sided structure (e.g. masked noise): guess half
        side = projection > np.median(projection)
    if 2 * side.sum() > side.size:
        side = ~side
    return touched[side]


@dataclass
class LeakageReport:
    """Mean precision / recall of the attack over users, and of the no-knowledge baseline."""

    backend: str
    users: int
    precision: float
    recall: float
    baseline_precision: float
    baseline_recall: float
    #: False when the server decodes no per-client vector (Paillier): the attacker guessed
    observed_uploads: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def score_guesses(guesses: dict[int, np.ndarray], split: ImplicitSplit, backend: str,
                  observed: bool) -> LeakageReport:
    """Precision and recall of ``guesses`` against the training positives, with the baseline."""
    prec, rec, base_p, base_r = [], [], [], []
    m = split.n_items
    for u, guess in guesses.items():
        truth = split.train_items(u)
        hit = np.intersect1d(guess, truth).size
        prec.append(hit / guess.size if guess.size else 0.0)
        rec.append(hit / truth.size)
        base_p.append(truth.size / m)
        base_r.append(guess.size / m)
    mean = lambda xs: float(np.mean(xs))
    return LeakageReport(backend, len(guesses), mean(prec), mean(rec), mean(base_p), mean(base_r),
                         observed)


def attack_round(per_client: dict[int, np.ndarray], scale: float, split: ImplicitSplit,
                 users: list[int], dim: int, backend: str, seed: int = 0) -> LeakageReport:
    """Attack one round's decoded uploads (``view.per_client``, divided by ``scale``).

    With no decodable upload (Paillier) the attacker guesses a random half of the items.
    """
    if per_client:
        guesses = {u: infer_positives(per_client[u] * scale, split.n_items, dim) for u in users}
    else:
        rng = np.random.default_rng(seed)
        guesses = {u: np.flatnonzero(rng.random(split.n_items) < 0.5) for u in users}
    return score_guesses(guesses, split, backend, bool(per_client))


def attack_backend(split: ImplicitSplit, backend: str, *, config: PFedRecConfig | None = None,
                   backend_options: dict | None = None, rounds: int = 1,
                   seed: int = 0) -> tuple[LeakageReport, Engine]:
    """Run ``rounds`` PFedRec rounds over ``backend``; attack every upload of the last one.

    Returns the report and the engine (its history holds the rounds' measured cost).
    """
    seen: dict[str, object] = {}

    def observer(rnd, result, uploads, upload_scale):
        seen.update(view=result.view.per_client, scale=upload_scale)

    options = {"record_view": True, **(backend_options or {})}
    engine = make_engine(split, backend, config=config, observer=observer, backend_options=options)
    engine.run(rounds)
    report = attack_round(seen["view"], seen["scale"], split, engine.trainer.clients(),
                          engine.trainer.config.latent_dim, engine.backend.name, seed)
    return report, engine
