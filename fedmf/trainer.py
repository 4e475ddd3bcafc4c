"""FedMF (Chai et al. 2019): federated matrix factorization over any aggregation backend.

Who holds what (paper §5): user i keeps u'_i and its ratings on the device; the
server distributes the item matrix V and applies the round's aggregated item
gradients. With a Paillier backend the aggregate stays encrypted under the key
all clients share; the clients decrypt it and apply the same public update rule to
their copy of V, so the server never holds V or any gradient in clear (it sees
ciphertexts only). With plain or SecAgg backends the server applies the sum in clear.

One round (``FedMFTrainer.run_round``, one round of :class:`fedmf.engine.Engine`):
1. every user runs :func:`fedmf.model.local_update` on the current V;
2. it uploads its item gradients through the backend, scaled by 1/``upload_scale``
   into [-1, 1] (the range every backend's codec takes; the engine divides):
   * FullText (``mode="full"``): a row for every item, zeros for unrated ones, which
     hides the rated set from an encrypting backend;
   * PartText (``mode="part"``): only its rated rows; the server learns the rated set;
3. the aggregate updates V (:func:`fedmf.model.apply_item_update`).

Before the first round one setup aggregation, through the same backend, yields the
public statistics the update rule needs: the global mean rating mu and each item's
rating count n_j (each user uploads its rated-item indicator and its rating sum
and count, all scaled into [0, 1]).

:func:`train_centralized` runs the same model and hyperparameters on pooled data in
one process (an independent, vectorised implementation): the "no accuracy loss"
baseline the federated runs are compared with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from secagg import AggregationBackend, make_backend

from .data import Split
from .engine import ClientUpdates, Engine, RoundTrainer, UploadLayout, cost_means
from .errors import ConfigError
from .metrics import mae, rmse
from .model import ModelConfig, apply_item_update, init_items, init_users, local_update, predict

MODES = ("full", "part")


@dataclass
class RoundLog:
    """Measured figures of one round (client figures are means over the clients)."""

    round: int
    test_rmse: float
    test_mae: float
    seconds: float
    client_seconds: float
    server_seconds: float
    bytes_up_per_client: float
    bytes_down_per_client: float
    #: part of client_seconds computed once per round for all clients (decrypting the aggregate)
    shared_client_seconds: float = 0.0
    #: users whose upload is in the round's aggregate
    participants: int = 0

    def line(self) -> str:
        return (
            f"round {self.round:3d}  rmse {self.test_rmse:.4f}  mae {self.test_mae:.4f}  "
            f"client {self.client_seconds * 1e3:8.1f} ms  server {self.server_seconds * 1e3:8.1f} ms  "
            f"up {self.bytes_up_per_client / 1024:8.1f} KiB/client"
        )


@dataclass
class TrainResult:
    """The trained model (U stays with the users in a deployment) and the round logs."""

    config: ModelConfig
    backend: str
    mode: str
    mu: float
    U: np.ndarray
    V: np.ndarray
    history: list[RoundLog] = field(default_factory=list)
    setup_seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        """The JSON summary of ``fedmf train``."""
        h = self.history
        return {
            "backend": self.backend,
            "mode": self.mode,
            "rounds": len(h),
            "test_rmse": h[-1].test_rmse if h else None,
            "test_mae": h[-1].test_mae if h else None,
            **cost_means(h),
            "setup_seconds": self.setup_seconds,
            "model": asdict(self.config),
            "history": [asdict(r) for r in h],
        }


class FedMFTrainer(RoundTrainer):
    """FedMF on one split over one aggregation backend, run by the :class:`~fedmf.engine.Engine`.

    ``run_round()`` runs one engine round and returns its :class:`RoundLog`;
    ``self.engine`` is the engine (its ``history`` holds the generic round records).

    ``observer(round, result, uploads, upload_scale)`` (optional) is called after every
    round with the backend's :class:`~secagg.RoundResult` and the users' uploads as
    sent (divided by ``upload_scale``); attacks use it to record what the server saw.

    ``prediction_offset`` (optional, one value per test rating) is added to the model's
    prediction before clipping: the device-side personalized masks of :mod:`fedmf.masked`,
    when ``split`` holds masked training targets.
    """

    def __init__(
        self,
        split: Split,
        backend: str | AggregationBackend = "plain",
        *,
        config: ModelConfig | None = None,
        mode: str = "full",
        upload_scale: float = 16.0,
        seed: int = 0,
        users: np.ndarray | None = None,
        observer: Callable | None = None,
        prediction_offset: np.ndarray | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if not upload_scale > 0:
            raise ConfigError(f"upload_scale must be > 0, got {upload_scale}")
        self.split = split
        self.config = config or ModelConfig()
        self.mode = mode
        self.upload_scale = float(upload_scale)
        self.prediction_offset = 0.0
        if prediction_offset is not None:
            self.prediction_offset = np.asarray(prediction_offset, dtype=np.float64)
            if self.prediction_offset.shape != (len(split.test),):
                raise ConfigError(
                    f"prediction_offset needs one value per test rating ({len(split.test)}), "
                    f"got shape {self.prediction_offset.shape}"
                )
        train = split.train
        self.n_items = train.n_items
        self.users = np.arange(train.n_users) if users is None else np.asarray(users)
        self.user_rows = train.rows_by_user()
        rng = np.random.default_rng(seed)
        self.U = init_users(self.config, train.n_users, rng)
        self.V = init_items(self.config, train.n_items, rng)
        self.history: list[RoundLog] = []
        self._new_users: dict[int, np.ndarray] = {}
        self.engine = Engine(self, make_backend(backend), observer=observer)
        self.backend = self.engine.backend
        self.setup_seconds = self.engine.setup_seconds

    @property
    def observer(self) -> Callable | None:
        return self.engine.observer

    @observer.setter
    def observer(self, value: Callable | None) -> None:
        self.engine.observer = value

    @property
    def round(self) -> int:
        return self.engine.round

    def participants(self) -> list[int]:
        """The users taking part: the cohort, less users with no training ratings."""
        return [int(u) for u in self.users if self.user_rows[u].size]

    # -- the engine's interface ------------------------------------------------------

    def clients(self) -> list[int]:
        return self.participants()

    def upload_layout(self) -> UploadLayout:
        width = self.config.row_length
        part = self.mode == "part"  # PartText: backends that cannot go sparse run it densely
        return UploadLayout(self.n_items * width, self.upload_scale, width, sparse=part, dense_fallback=part)

    def setup(self, aggregate) -> None:
        """Aggregate mu and the item counts n_j once, through the backend."""
        vectors = {u: self.setup_vector(u) for u in self.participants()}
        self.apply_setup(aggregate(vectors).aggregate)

    def setup_vector(self, u: int) -> np.ndarray:
        """User u's setup upload: its rated-item indicator, rating sum and count, in [0, 1]."""
        train, m = self.split.train, self.n_items
        scale = float(max(np.abs(train.rating_scale))) * m  # a rating sum is at most top * m
        rows = self.user_rows[u]
        x = np.zeros(m + 2)
        x[train.items[rows]] = 1.0
        x[m] = train.ratings[rows].sum() / scale
        x[m + 1] = rows.size / scale
        return x

    def apply_setup(self, agg: np.ndarray) -> None:
        """mu = (sum of ratings) / (number of ratings); n_j rounded from the indicator sum."""
        m = self.n_items
        self.mu = float(agg[m] / agg[m + 1])
        self.item_counts = np.rint(agg[:m]).astype(np.int64)

    def local_updates(self, round: int, users: list[int]) -> ClientUpdates:
        """Each user's FullText item-gradient upload (its rated rows non-zero)."""
        cfg, train, width = self.config, self.split.train, self.config.row_length
        vectors, support, seconds = {}, {}, {}
        self._new_users = {}
        for u in users:
            t0 = time.perf_counter()
            rows = self.user_rows[u]
            items = train.items[rows]
            self._new_users[u], G = local_update(cfg, self.mu, self.U[u], self.V, items, train.ratings[rows])
            upload = np.zeros((self.n_items, width))
            upload[items] = G
            vectors[u] = upload.ravel()
            support[u] = items
            seconds[u] = time.perf_counter() - t0
        return ClientUpdates(vectors, seconds, support)

    def server_step(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        self.apply_aggregate(round, aggregate, included)
        for u in included:
            self.U[u] = self._new_users[u]

    def apply_aggregate(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        """The shared part of the step: V from the aggregated item gradients (paper §5)."""
        rows = aggregate.reshape(self.n_items, self.config.row_length)
        self.V = apply_item_update(self.config, self.V, rows, self.item_counts)

    def evaluate(self, round: int) -> dict[str, float]:
        test = self.split.test
        pred = predict(self.mu + self.prediction_offset, self.U, self.V, test.users, test.items,
                       test.rating_scale)
        return {"test_rmse": rmse(pred, test.ratings), "test_mae": mae(pred, test.ratings)}

    # -- the FedMF API -----------------------------------------------------------------

    def run_round(self, progress: Callable[[int], object] | None = None) -> RoundLog:
        """Run one FedMF round through the engine and return its log; ``progress(user)`` is
        called as the backend absorbs each user's upload (e.g. a
        :class:`fedmf.progress.ClientProgress` bar's ``client_done``)."""
        rec = self.engine.run_round(progress=progress)
        log = RoundLog(
            round=rec.round,
            test_rmse=rec.metrics["test_rmse"],
            test_mae=rec.metrics["test_mae"],
            seconds=rec.seconds,
            client_seconds=rec.client_seconds,
            server_seconds=rec.server_seconds,
            bytes_up_per_client=rec.bytes_up_per_client,
            bytes_down_per_client=rec.bytes_down_per_client,
            shared_client_seconds=rec.shared_client_seconds,
            participants=rec.participants,
        )
        self.history.append(log)
        return log

    def result(self) -> TrainResult:
        return TrainResult(
            self.config, self.backend.name, self.mode, self.mu, self.U, self.V,
            list(self.history), self.setup_seconds,
        )


def train_centralized(split: Split, config: ModelConfig, rounds: int, *, seed: int = 0) -> list[float]:
    """The same model, hyperparameters and initial point trained on pooled data.

    Vectorised over all ratings (``order="paper"``: both gradients at the old iterate),
    it is an independent implementation of the update the federated trainer runs
    user by user. Returns the test RMSE after each round.
    """
    if config.order != "paper":
        raise ConfigError("the centralized baseline implements order='paper' only")
    train, test = split.train, split.test
    rng = np.random.default_rng(seed)
    U = init_users(config, train.n_users, rng)
    V = init_items(config, train.n_items, rng)
    mu = float(train.ratings.mean())
    n_u = np.maximum(np.bincount(train.users, minlength=train.n_users), 1)[:, None]
    n_v = np.bincount(train.items, minlength=train.n_items)
    history = []
    for _ in range(rounds):
        e = train.ratings - mu - np.einsum("ij,ij->i", U[train.users], V[train.items])
        grad_u = np.zeros_like(U)
        np.add.at(grad_u, train.users, -2.0 * e[:, None] * V[train.items])
        grad_u = grad_u / n_u + 2.0 * config.reg * U
        grad_v = np.zeros_like(V)
        np.add.at(grad_v, train.items, -2.0 * e[:, None] * U[train.users] + 2.0 * config.reg * V[train.items])
        U = U - config.lr * grad_u * config.user_mask
        V = apply_item_update(config, V, grad_v[:, config.item_mask], n_v)
        history.append(rmse(predict(mu, U, V, test.users, test.items, test.rating_scale), test.ratings))
    return history

