"""PFedRec (Zhang et al., IJCAI 2023): dual personalization over any aggregation backend.

Who holds what (paper §4, Alg. 1; code ``engine.py``):
* the device of user i keeps its score function (w_i, b_i) across rounds (never
  uploaded) and its post-tuned copy of the item table, used for its own inference;
* the server holds the global item table E and averages the clients' updates.

One round (:meth:`PFedRecTrainer.client_updates` then :meth:`server_step`):
1. each participant replaces its table by E, samples 4 negatives per positive (anew
   each round), and runs one local epoch of :func:`fedmf.pfedrec_model.train_users`;
2. it uploads its item update Delta_i = E_i - E **densely** (all M x K entries, zeros
   on untouched rows: the support of a sparse update is its positives and negatives),
   optionally plus Laplace(0, lambda) noise on every entry (paper §6.6, Table 4, drawn
   from the CSPRNG), clipped to [-upload_clip, upload_clip] on the device;
3. the server sets E <- E + (1/n) sum_i Delta_i over the round's n survivors: the
   code's unweighted mean of the uploaded tables (untouched rows equal E).

Variants (``PFedRecConfig.variant``):
* ``"pfedrec"``: the alternating score / item steps; evaluated twice per round, with
  each user's own post-tuned table (PFedRec) and with the global table and the user's
  own score function (PFedRec without item personalization, the paper's "Global" of
  Fig. 3);
* ``"fedmf"``: FedMF on implicit data: private user vector (w_i, b_i), one joint SGD
  step on it and on the item rows from the same gradient, inference with the global
  table. Same loss, negatives, learning rates and aggregation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from secagg import AggregationBackend, make_backend

from .errors import ConfigError
from .ldp import laplace_noise
from .pfedrec_model import global_logits, sample_round, scatter_dense, touched_rows, train_users

VARIANTS = ("pfedrec", "fedmf")


@dataclass
class PFedRecConfig:
    """Hyperparameters; defaults are the official code's (``train.py``, ``engine.py``)."""

    latent_dim: int = 32
    batch_size: int = 256
    lr: float = 0.1
    #: item-embedding learning rate = lr * n_items * lr_eta (code's ``optimizer_i``)
    lr_eta: float = 80.0
    n_neg: int = 4
    rounds: int = 100
    sample_fraction: float = 1.0
    variant: str = "pfedrec"
    #: Laplace noise scale lambda added to every uploaded entry (0 = off)
    ldp_scale: float = 0.0
    #: device-side clip of each uploaded entry; the backend codecs take [-clip, clip]
    upload_clip: float = 8.0
    seed: int = 0

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("latent_dim", "batch_size", "n_neg", "rounds"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "lr_eta", "upload_clip"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0 < self.sample_fraction <= 1:
            raise ConfigError(f"sample_fraction must be in (0, 1], got {self.sample_fraction}")
        if not (np.isfinite(self.ldp_scale) and self.ldp_scale >= 0):
            raise ConfigError(f"ldp_scale must be a finite number >= 0, got {self.ldp_scale}")


@dataclass
class ImplicitArrays:
    """A leave-one-out implicit split as the kernels take it (CSR by user).

    ``train_indptr/train_items``: training positives; ``seen_indptr/seen_items``: every
    interaction (train, validation, test), excluded from negative sampling;
    ``val_items`` / ``test_items`` (n_users x 100): 99 sampled negatives then the
    held-out positive in the last column.
    """

    n_users: int
    n_items: int
    train_indptr: np.ndarray
    train_items: np.ndarray
    seen_indptr: np.ndarray
    seen_items: np.ndarray
    val_items: np.ndarray
    test_items: np.ndarray


def sampled_hr_ndcg(logits: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of the positive in the last column among the others (pessimistic ties).

    rank = 1 + #{negatives scoring >= the positive}; HR = [rank <= k];
    NDCG = 1 / log2(1 + rank) if rank <= k else 0; both averaged over users.
    """
    rank = 1 + np.sum(logits[:, :-1] >= logits[:, -1:], axis=1)
    hit = rank <= k
    return float(hit.mean()), float(np.where(hit, 1.0 / np.log2(1.0 + rank), 0.0).mean())


@dataclass
class RoundLog:
    """Measured figures of one round (client figures are means over the participants)."""

    round: int
    train_loss: float
    val_hr_at_10: float
    val_ndcg_at_10: float
    hr_at_10: float
    ndcg_at_10: float
    #: the same metrics with the global table (PFedRec without item personalization)
    global_val_hr_at_10: float
    global_hr_at_10: float
    global_ndcg_at_10: float
    seconds: float
    train_seconds: float
    client_seconds: float
    server_seconds: float
    bytes_up_per_client: float
    clipped: int

    def line(self) -> str:
        return (
            f"round {self.round:3d}  loss {self.train_loss:.4f}  val HR {self.val_hr_at_10:.4f}  "
            f"test HR {self.hr_at_10:.4f} NDCG {self.ndcg_at_10:.4f}  "
            f"(global HR {self.global_hr_at_10:.4f})  {self.seconds:6.2f} s"
        )


@dataclass
class PFedRecState:
    """Model state: the server's table E and, per user, what stays on its device."""

    E: np.ndarray
    W: np.ndarray
    B: np.ndarray
    #: logits of each user's val / test items under its latest post-tuned model
    own_val: np.ndarray
    own_test: np.ndarray


def init_state(data: ImplicitArrays, config: PFedRecConfig, rng: np.random.Generator) -> PFedRecState:
    """E ~ N(0, 1) (nn.Embedding); (w, b) ~ U(-1/sqrt(K), 1/sqrt(K)) (nn.Linear).

    PFedRec: every client starts from the same score function (the code copies one
    model); FedMF: independent user vectors.
    """
    k = config.latent_dim
    bound = 1.0 / np.sqrt(k)
    E = rng.standard_normal((data.n_items, k))
    shape = (data.n_users if config.variant == "fedmf" else 1, k)
    W = np.broadcast_to(rng.uniform(-bound, bound, shape), (data.n_users, k)).copy()
    B = np.broadcast_to(rng.uniform(-bound, bound, shape[0]), (data.n_users,)).copy()
    own_val = global_logits(E, W, B, data.val_items)
    own_test = global_logits(E, W, B, data.test_items)
    return PFedRecState(E, W, B, own_val, own_test)


@dataclass
class ClientRound:
    """What the round's local training produced (per-user CSR deltas, before upload)."""

    participants: np.ndarray
    row_indptr: np.ndarray
    rows: np.ndarray
    deltas: np.ndarray
    loss: float
    seconds: float


class PFedRecTrainer:
    """Runs PFedRec (or the FedMF-implicit baseline) rounds over one aggregation backend.

    ``observer(round, result, uploads, client_round)`` (optional) sees every round's
    backend result and the uploads as sent; the attack uses it.
    """

    def __init__(self, data: ImplicitArrays, backend: str | AggregationBackend = "plain", *,
                 config: PFedRecConfig | None = None, observer: Callable | None = None,
                 backend_options: dict | None = None) -> None:
        self.config = config or PFedRecConfig()
        self.config.check()
        self.data = data
        encoded = isinstance(backend, str) and backend != "plain"  # codecs need the value range
        options = {"clip": self.config.upload_clip} if encoded else {}
        options.update(backend_options or {})
        self.backend = make_backend(backend, **options)
        self.observer = observer
        self.rng = np.random.default_rng(self.config.seed)
        self.state = init_state(data, self.config, self.rng)
        self.eval_items = np.concatenate([data.val_items, data.test_items], axis=1)
        self.history: list[RoundLog] = []

    @property
    def lr_item(self) -> float:
        return self.config.lr * self.data.n_items * self.config.lr_eta

    def participants(self) -> np.ndarray:
        n = self.data.n_users
        if self.config.sample_fraction >= 1:
            return np.arange(n)
        m = max(1, int(n * self.config.sample_fraction))
        return np.sort(self.rng.choice(n, m, replace=False))

    def client_updates(self, participants: np.ndarray) -> ClientRound:
        """Every participant's local epoch (run together by the numba kernel)."""
        d, c = self.data, self.config
        t0 = time.perf_counter()
        neg_u = self.rng.random(d.train_items.size * c.n_neg)
        shuffle_u = self.rng.random(d.train_items.size * (1 + c.n_neg))
        items, labels = sample_round(d.train_indptr, d.train_items, d.seen_indptr, d.seen_items,
                                     d.n_items, c.n_neg, neg_u, shuffle_u)
        sample_indptr = d.train_indptr * (1 + c.n_neg)
        row_indptr, rows = touched_rows(sample_indptr, items, d.n_items)
        st = self.state
        deltas, loss, logits = train_users(
            st.E, st.W, st.B, participants.astype(np.int64), sample_indptr, items, labels,
            row_indptr, rows, c.lr, self.lr_item, c.batch_size, c.variant == "fedmf",
            self.eval_items)
        n_val = d.val_items.shape[1]
        st.own_val[participants] = logits[participants, :n_val]
        st.own_test[participants] = logits[participants, n_val:]
        return ClientRound(participants, row_indptr, rows, deltas,
                           float(loss[participants].mean()), time.perf_counter() - t0)

    def upload(self, cr: ClientRound, u: int) -> tuple[np.ndarray, int]:
        """User u's upload: dense Delta_u (+ Laplace noise), clipped; and the clipped count."""
        x = scatter_dense(cr.row_indptr, cr.rows, cr.deltas, u, self.data.n_items)
        if self.config.ldp_scale > 0:
            x += laplace_noise(x.size, self.config.ldp_scale)
        clip = self.config.upload_clip
        clipped = int(np.count_nonzero(np.abs(x) > clip))
        return np.clip(x, -clip, clip, out=x), clipped

    def server_step(self, mean_update: np.ndarray) -> None:
        """E <- E + (1/n) sum_i Delta_i (the backend's unweighted mean over survivors)."""
        self.state.E += mean_update.reshape(self.state.E.shape)

    def evaluate(self) -> dict[str, float]:
        st, d = self.state, self.data
        own_val = sampled_hr_ndcg(st.own_val)
        own_test = sampled_hr_ndcg(st.own_test)
        if self.config.variant == "fedmf":  # FedMF infers with the global table only
            own_val = sampled_hr_ndcg(global_logits(st.E, st.W, st.B, d.val_items))
            own_test = sampled_hr_ndcg(global_logits(st.E, st.W, st.B, d.test_items))
        g_val = sampled_hr_ndcg(global_logits(st.E, st.W, st.B, d.val_items))
        g_test = sampled_hr_ndcg(global_logits(st.E, st.W, st.B, d.test_items))
        return {"val_hr_at_10": own_val[0], "val_ndcg_at_10": own_val[1],
                "hr_at_10": own_test[0], "ndcg_at_10": own_test[1],
                "global_val_hr_at_10": g_val[0], "global_hr_at_10": g_test[0],
                "global_ndcg_at_10": g_test[1]}

    def run_round(self, rnd: int, dropped: tuple[int, ...] = ()) -> RoundLog:
        t0 = time.perf_counter()
        cr = self.client_updates(self.participants())
        uploads, clipped = {}, 0
        for u in cr.participants:
            uploads[int(u)], c = self.upload(cr, int(u))
            clipped += c
        result = self.backend.aggregate(uploads, dropped=dropped)
        if self.observer is not None:
            self.observer(rnd, result, uploads, cr)
        del uploads
        self.server_step(result.mean)
        cost = result.cost
        log = RoundLog(round=rnd, train_loss=cr.loss, **self.evaluate(),
                       seconds=time.perf_counter() - t0, train_seconds=cr.seconds,
                       client_seconds=cost.mean_client_seconds(),
                       server_seconds=cost.server_seconds,
                       bytes_up_per_client=cost.mean_bytes_up(), clipped=clipped)
        self.history.append(log)
        return log

    def run(self, rounds: int | None = None, progress: Callable[[str], None] | None = None) -> list[RoundLog]:
        for rnd in range(rounds or self.config.rounds):
            log = self.run_round(rnd)
            if progress is not None:
                progress(log.line())
        return self.history


def best_validation(history: list[RoundLog], val_key: str = "val_hr_at_10",
                    keys: tuple[str, ...] = ("hr_at_10", "ndcg_at_10")) -> dict[str, float]:
    """Test metrics at the round of best validation HR@10 (ties: the latest, as the code's >=)."""
    best = None
    for log in history:
        if best is None or getattr(log, val_key) >= getattr(best, val_key):
            best = log
    if best is None:
        raise ConfigError("no rounds were run")
    out = {key: getattr(best, key) for key in keys}
    out["round"] = best.round
    return out


def summary(history: list[RoundLog]) -> dict[str, object]:
    """JSON-ready record of a run: best-validation metrics of both inferences and the history."""
    return {"own": best_validation(history),
            "global": best_validation(history, "global_val_hr_at_10",
                                      ("global_hr_at_10", "global_ndcg_at_10")),
            "history": [asdict(r) for r in history]}
