"""PFedRec (Zhang et al., IJCAI 2023): dual personalization over any aggregation backend.

Who holds what (paper §4, Alg. 1; code ``engine.py``):
* the device of user i keeps its score function (w_i, b_i) across rounds (never
  uploaded) and its post-tuned copy of the item table, used for its own inference;
* the server holds the global item table E and averages the clients' updates.

One round of :class:`fedmf.engine.Engine` (:meth:`PFedRecTrainer.local_updates`, the
backend, :meth:`PFedRecTrainer.server_step`):
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
  table. Same loss, negatives, learning rates and aggregation. [R] The paper's
  baseline code is not published (fcf_pfedrec_personalfr.md §2.4); this is our
  reading of "user embeddings local, item gradients aggregated".

Upload range: entries are clipped on the device to ``upload_clip`` (a public bound)
and the engine divides by it, so every backend's codec sees [-1, 1]. Per-user deltas
are large (the code's item rate is lr x M x 80 = 13,456 on ML-100K; 99.99th
percentile of |Delta| about 100 in early rounds), so the bench uses 64; the fraction
clipped is in every round's metrics (``clipped_fraction``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from secagg import AggregationBackend, make_backend

from .data.implicit import ImplicitSplit
from .engine import ClientUpdates, Engine, Observer, RoundTrainer, UploadLayout, best_round
from .errors import ConfigError
from .ldp import laplace_noise
from .pfedrec_model import clip_rows, dense_uploads, global_logits, sample_round, touched_rows, train_users
from .ranking import hit_ratio_at_k, ndcg_at_k, sampled_ranks

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
    upload_clip: float = 64.0
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
class PFedRecState:
    """Model state: the server's table E and, per user, what stays on its device."""

    E: np.ndarray
    W: np.ndarray
    B: np.ndarray
    #: logits of each user's val and test items under its latest post-tuned model
    own_logits: np.ndarray


def init_state(n_users: int, n_items: int, config: PFedRecConfig, eval_items: np.ndarray,
               rng: np.random.Generator) -> PFedRecState:
    """E ~ N(0, 1) (nn.Embedding); (w, b) ~ U(-1/sqrt(K), 1/sqrt(K)) (nn.Linear).

    PFedRec: every client starts from the same score function (the code copies one
    model); FedMF: independent user vectors. A user that has not trained yet is
    evaluated with the initial model, as in the code.
    """
    k = config.latent_dim
    bound = 1.0 / np.sqrt(k)
    E = rng.standard_normal((n_items, k))
    rows = n_users if config.variant == "fedmf" else 1
    W = np.broadcast_to(rng.uniform(-bound, bound, (rows, k)), (n_users, k)).copy()
    B = np.broadcast_to(rng.uniform(-bound, bound, rows), (n_users,)).copy()
    return PFedRecState(E, W, B, global_logits(E, W, B, eval_items))


def _eval_items(split: ImplicitSplit) -> tuple[np.ndarray, np.ndarray]:
    """(n_users x 2(m+1)) items [val negatives, val item, test negatives, test item], evaluated mask."""
    if split.val_negatives is None or split.test_negatives is None:
        raise ConfigError(f"PFedRec needs a leave-one-out split with sampled negatives, got {split.name}")
    has_val, has_test = np.diff(split.val_indptr) == 1, np.diff(split.test_indptr) == 1
    evaluated = has_val & has_test
    val_item = np.zeros(split.n_users, np.int64)
    test_item = np.zeros(split.n_users, np.int64)
    val_item[evaluated] = split.val_indices[split.val_indptr[:-1][evaluated]]
    test_item[evaluated] = split.test_indices[split.test_indptr[:-1][evaluated]]
    items = np.concatenate([split.val_negatives, val_item[:, None],
                            split.test_negatives, test_item[:, None]], axis=1)
    items[~evaluated] = 0
    return items, evaluated


def _seen_csr(split: ImplicitSplit) -> tuple[np.ndarray, np.ndarray]:
    """Every interaction of each user (train, validation, test): never drawn as a negative."""
    parts = [(split.train_indptr, split.train_indices), (split.val_indptr, split.val_indices),
             (split.test_indptr, split.test_indices)]
    users = np.concatenate([np.repeat(np.arange(split.n_users), np.diff(p)) for p, _ in parts])
    items = np.concatenate([i for _, i in parts])
    order = np.lexsort((items, users))
    return np.searchsorted(users[order], np.arange(split.n_users + 1)).astype(np.int64), items[order]


@dataclass
class ClientRound:
    """One round's local training, before the server commits it (CSR per user)."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    sample_indptr: np.ndarray
    row_indptr: np.ndarray
    rows: np.ndarray
    deltas: np.ndarray
    W: np.ndarray
    B: np.ndarray
    logits: np.ndarray
    loss: float
    clipped: int = 0


class PFedRecTrainer(RoundTrainer):
    """PFedRec (or the FedMF-implicit baseline) on one leave-one-out split, for the engine.

    ``last_round`` keeps the latest :class:`ClientRound` (samples, touched rows, deltas):
    the ground truth the leakage attack is scored against.
    """

    def __init__(self, split: ImplicitSplit, config: PFedRecConfig | None = None) -> None:
        self.config = config or PFedRecConfig()
        self.config.check()
        self.split = split
        self.rng = np.random.default_rng(self.config.seed)
        self.eval_items, self.evaluated = _eval_items(split)
        self.seen_indptr, self.seen_items = _seen_csr(split)
        self.state = init_state(split.n_users, split.n_items, self.config, self.eval_items, self.rng)
        self.last_round: ClientRound | None = None

    @property
    def lr_item(self) -> float:
        """The code's item-embedding rate lr * num_items * lr_eta."""
        return self.config.lr * self.split.n_items * self.config.lr_eta

    # -- the engine's interface ------------------------------------------------------

    def clients(self) -> list[int]:
        return [int(u) for u in np.flatnonzero(np.diff(self.split.train_indptr))]

    def upload_layout(self) -> UploadLayout:
        return UploadLayout(self.split.n_items * self.config.latent_dim, self.config.upload_clip)

    def local_updates(self, round: int, users: list[int]) -> ClientUpdates:
        """Every participant's local epoch and dense upload (numba, all users at once).

        A device's seconds are its share of the batch. The uploads are the rows of one
        array (the engine scales them in place).
        """
        t0 = time.perf_counter()
        cr = self.train_locally(np.asarray(users, dtype=np.int64))
        X, cr.clipped = self.uploads(cr)
        each = (time.perf_counter() - t0) / max(len(users), 1)
        self.last_round = cr
        return ClientUpdates({u: X[i] for i, u in enumerate(users)}, {u: each for u in users})

    def server_step(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        """E <- E + (1/n) sum_i Delta_i over the n survivors; survivors keep their new (w, b)."""
        self.apply_aggregate(round, aggregate, included)
        st, cr = self.state, self.last_round
        done = np.asarray(included, dtype=np.int64)
        st.W[done], st.B[done], st.own_logits[done] = cr.W[done], cr.B[done], cr.logits[done]

    def apply_aggregate(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        """The server's part of the step: E <- E + (1/n) sum_i Delta_i."""
        self.state.E += aggregate.reshape(self.state.E.shape) / len(included)

    def evaluate(self, round: int) -> dict[str, float]:
        """HR@10 / NDCG@10 (validation and test) with each user's own model and with the global table."""
        st = self.state
        shared = global_logits(st.E, st.W, st.B, self.eval_items)
        own = shared if self.config.variant == "fedmf" else st.own_logits
        out = {}
        for prefix, logits in (("", own), ("global_", shared)):
            for part, metrics in zip(("val_", ""), self._rank(logits)):
                out[f"{prefix}{part}hr_at_10"], out[f"{prefix}{part}ndcg_at_10"] = metrics
        cr = self.last_round
        if cr is not None:
            out["train_loss"] = cr.loss
            out["clipped_fraction"] = cr.clipped / (cr.users.size * st.E.size)
        return out

    # -- the device side -------------------------------------------------------------

    def train_locally(self, users: np.ndarray) -> ClientRound:
        """Sample this round's negatives, then run every user's local epoch on copies of its state."""
        s, c, st = self.split, self.config, self.state
        neg_u = self.rng.random(s.train_indices.size * c.n_neg)
        shuffle_u = self.rng.random(s.train_indices.size * (1 + c.n_neg))
        items, labels = sample_round(s.train_indptr, s.train_indices, self.seen_indptr,
                                     self.seen_items, s.n_items, c.n_neg, neg_u, shuffle_u)
        sample_indptr = s.train_indptr * (1 + c.n_neg)
        row_indptr, rows = touched_rows(sample_indptr, items, s.n_items)
        W, B = st.W.copy(), st.B.copy()
        deltas, loss, logits = train_users(
            st.E, W, B, users, sample_indptr, items, labels, row_indptr, rows, c.lr,
            self.lr_item, c.batch_size, c.variant == "fedmf", self.eval_items)
        return ClientRound(users, items, labels, sample_indptr, row_indptr, rows, deltas, W, B,
                           logits, float(loss[users].mean()) if users.size else 0.0)

    def uploads(self, cr: ClientRound) -> tuple[np.ndarray, int]:
        """Row i: user ``cr.users[i]``'s dense Delta (+ Laplace noise), clipped; and the clipped count."""
        n_items, clip, lam = self.split.n_items, self.config.upload_clip, self.config.ldp_scale
        if lam == 0:
            X, clipped = dense_uploads(cr.row_indptr, cr.rows, cr.deltas, cr.users, n_items, clip)
            return X, int(clipped.sum())
        X, _ = dense_uploads(cr.row_indptr, cr.rows, cr.deltas, cr.users, n_items, np.inf)
        for row in X:
            row += laplace_noise(row.size, lam)
        return X, int(clip_rows(X, clip).sum())

    def _rank(self, logits: np.ndarray) -> list[tuple[float, float]]:
        return [(hit_ratio_at_k(r, 10), ndcg_at_k(r, 10)) for r in self.ranks(logits, self.evaluated)]

    def ranks(self, logits: np.ndarray, users: np.ndarray) -> list[np.ndarray]:
        """The sampled ranks (validation, test) of the held-out item of each of ``users``
        (a boolean mask or ids of evaluated users) among its negatives."""
        m = self.split.val_negatives.shape[1]
        out = []
        for lo in (0, m + 1):
            block = logits[users, lo:lo + m + 1]
            out.append(sampled_ranks(block[:, m], block[:, :m]))
        return out


def make_engine(split: ImplicitSplit, backend: str | AggregationBackend = "plain", *,
                config: PFedRecConfig | None = None, observer: Observer | None = None,
                backend_options: dict | None = None) -> Engine:
    """A PFedRec engine: the trainer, and the backend with its codec range set to [-1, 1]."""
    trainer = PFedRecTrainer(split, config)
    if isinstance(backend, str):
        options = dict(backend_options or {})
        if backend != "plain":
            options.setdefault("clip", 1.0)  # the engine divides uploads by upload_clip
        backend = make_backend(backend, **options)
    return Engine(trainer, backend, participation=trainer.config.sample_fraction,
                  seed=trainer.config.seed, observer=observer)


def run_summary(engine: Engine) -> dict[str, object]:
    """Test metrics at the best validation round (own and global inference) plus the engine summary."""
    h = engine.history
    own = best_round(h, "val_hr_at_10")
    shared = best_round(h, "global_val_hr_at_10")
    return {
        "hr_at_10": own.metrics["hr_at_10"], "ndcg_at_10": own.metrics["ndcg_at_10"],
        "best_round": own.round,
        "last_round": {k: h[-1].metrics[k] for k in ("hr_at_10", "ndcg_at_10")},
        "global_table": {"hr_at_10": shared.metrics["global_hr_at_10"],
                         "ndcg_at_10": shared.metrics["global_ndcg_at_10"], "best_round": shared.round},
        "config": asdict(engine.trainer.config),
        **engine.summary(),
    }
