"""PersonalFR (Le et al., Asilomar 2022): private encoder, federated decoder, over any backend.

Reference note §3 ([V-code] = read in the authors' code; [R] = our reconstruction).

Variants in one harness (``variant``):

* ``"personalfr"``: each client keeps its encoder (W1, b1, W2, b2) on the device; only
  the decoder (W3, b3, W4, b4) goes through the backend and is averaged [V-code].
* ``"fedavg"``: the whole autoencoder is averaged (the code's ``federated_mode='all'``).
* Joint (centralized, Adam) is :func:`train_joint`.

One round [V-code ``train_personalFR.py``, ``fed.py``]: a fraction 0.1 of the clients
is sampled; each loads the server decoder (and, for FedAvg, encoder), trains 5 local
epochs of SGD (Nesterov momentum 0.9, weight decay 5e-4, gradient clipped to global
norm 1, the round's cosine-annealed lr starting at 0.1) on batches of its users, keeps
its optimizer state for its next round, and uploads. The server replaces the federated
part by the unweighted mean of the clients' copies: it receives the mean of the
updates Delta_c = theta_c - theta through the backend and sets theta += mean(Delta_c)
(the code's server SGD with lr 1 on theta - avg is the same step).

Item rows, exactly. A row j of W1 / (W4, b4) has zero gradient unless item j is among
the client's items S_c (:mod:`fedmf.autorec`). Under SGD with weight decay and
momentum such a row evolves linearly and identically for every j: per step,
b <- mu b + wd p, p <- p - lr (wd p + mu b) (torch's Nesterov SGD with zero gradient).
So a client trains only its |S_c| rows explicitly and applies the closed-form scalar
map (alpha, beta) to the other rows: they end at alpha * theta_j with momentum
beta * theta_j. This is exact within a round. Across rounds we keep one scalar beta per
client for the momentum of its never-active rows, i.e. we take that momentum as
beta * (current global row) instead of beta * (global row of the client's last round):
[R] a deviation of order lr * mu^2 * wd * (drift of the global row), which is below
float32 resolution in practice, and it saves a dense per-client momentum buffer
(M x 257 floats per client). Encoder rows outside S_c never touch the client's data or
outputs, so PersonalFR does not store them at all.

Speed: a client's local steps run in one numba call (:mod:`fedmf.autorec_kernel`,
``kernel="numba"``, the default) or step by step in numpy (``kernel="numpy"``, the
reference the tests compare it with); both draw the same batches and dropout masks.

Partial compression [V-code ``calculate_item_union_set``]: a client's active decoder
rows are its items S_c; :attr:`RoundLog.active_rows_per_client` reports them and
:func:`sparse_upload_bytes` what an upload of those rows only would take. The upload
here is dense (aligned vectors, which secure aggregation needs); a sparse upload
would tell the server each client's item set (see ``attacks/personalfr_leakage.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from secagg import AggregationBackend, make_backend

from .autorec import (
    CODE,
    DECODER,
    DROPOUT,
    ENCODER,
    HIDDEN,
    LOSSES,
    Layout,
    decode_hidden,
    decoder_size,
    encode,
    loss_and_grad,
    targets,
    xavier_init,
)
from .autorec_kernel import delta_rows, train_local
from .data import Split
from .engine import ClientUpdates, Engine, RoundTrainer, UploadLayout
from .errors import ConfigError

VARIANTS = ("personalfr", "fedavg")
KERNELS = ("numba", "numpy")


@dataclass(frozen=True)
class FedConfig:
    """Hyperparameters of the federated variants (defaults: the PersonalFR code, ML-100K)."""

    loss: str = "explicit"
    variant: str = "personalfr"
    rounds: int = 800  # the cosine schedule's length (the code: 800 global rounds)
    fraction: float = 0.1
    local_epochs: int = 5
    batch_users: int = 5
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_norm: float = 1.0

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("rounds", "local_epochs", "batch_users"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        if not (self.lr > 0 and self.clip_norm > 0 and self.weight_decay >= 0 and 0 <= self.momentum < 1):
            raise ConfigError("need lr > 0, clip_norm > 0, weight_decay >= 0, 0 <= momentum < 1")

    def lr_at(self, rnd: int) -> float:
        """Cosine annealing over the rounds (torch CosineAnnealingLR, T_max = rounds, eta_min 0)."""
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * rnd / self.rounds))


# ---------------------------------------------------------------- data per client


@dataclass
class ClientData:
    """One client's users and their training values on the client's items ``S``."""

    users: np.ndarray  # dataset user ids
    items: np.ndarray  # S: sorted item ids held by the client's users
    values: np.ndarray  # len(users) x |S| float32: target values (0 where unobserved)
    observed: np.ndarray  # len(users) x |S| bool


def assign_users(n_users: int, clients: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Users per client: one user each (``clients=None``) or a seeded iid partition."""
    if clients is None:
        return [np.array([u]) for u in range(n_users)]
    if not 1 <= clients <= n_users:
        raise ConfigError(f"clients must be in 1..{n_users}, got {clients}")
    return [np.sort(part) for part in np.array_split(rng.permutation(n_users), clients)]


def client_data(split: Split, users: np.ndarray, loss: str, rows_by_user: list[np.ndarray]) -> ClientData:
    train = split.train
    rows = np.concatenate([rows_by_user[u] for u in users]) if len(users) else np.array([], int)
    items = np.unique(train.items[rows])
    values = np.zeros((len(users), items.size), np.float32)
    observed = np.zeros((len(users), items.size), bool)
    for k, u in enumerate(users):
        r = rows_by_user[u]
        col = np.searchsorted(items, train.items[r])
        values[k, col] = targets(train.ratings[r], loss)
        observed[k, col] = True
    return ClientData(np.asarray(users), items, values, observed)


# ---------------------------------------------------------------- optimizer


def nesterov_step(p, buf, g, lr, cfg: FedConfig) -> None:
    """torch.optim.SGD(momentum, nesterov=True, weight_decay) in place on flat arrays."""
    d = g + np.float32(cfg.weight_decay) * p
    buf *= np.float32(cfg.momentum)
    buf += d
    d += np.float32(cfg.momentum) * buf
    p -= np.float32(lr) * d


def clip_global_norm(g: np.ndarray, max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_: scale g by max_norm / (norm + 1e-6) when below 1."""
    norm = float(np.sqrt(np.dot(g, g)))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        g *= np.float32(coef)
    return norm


def idle_row_map(steps: int, lr: float, beta0: float, cfg: FedConfig) -> tuple[float, float]:
    """(alpha, beta) after ``steps`` zero-gradient Nesterov steps from (1, beta0).

    A row p with momentum b = beta0 p evolves as b <- mu b + wd p, p <- p - lr (wd p + mu b);
    both stay proportional to the starting row: p_end = alpha p, b_end = beta p.
    """
    alpha, beta = 1.0, float(beta0)
    for _ in range(steps):
        beta = cfg.momentum * beta + cfg.weight_decay * alpha
        alpha = alpha - lr * (cfg.weight_decay * alpha + cfg.momentum * beta)
    return alpha, beta


@dataclass
class ClientState:
    """What a client keeps on its device between rounds."""

    momentum: np.ndarray  # flat, Layout(|S|)
    idle_beta: float = 0.0  # momentum / row ratio of rows outside S
    encoder: np.ndarray | None = None  # PersonalFR: W1[S], b1, W2, b2 (flat, private)
    rounds: int = 0


# ---------------------------------------------------------------- rows <-> full vectors


def gather_rows(full: np.ndarray, n_items: int, items: np.ndarray) -> np.ndarray:
    """The flat parameters over the rows ``items`` from a flat vector over all items."""
    src, dst = Layout(n_items).views(full), Layout(items.size)
    out = np.empty(dst.size, np.float32)
    v = dst.views(out)
    for name in v:
        v[name][...] = src[name][items] if name in ("W1", "W4", "b4") else src[name]
    return out


def local_delta(
    global_flat: np.ndarray, local: np.ndarray, n_items: int, items: np.ndarray, alpha: float,
    names: tuple[str, ...],
) -> tuple[np.ndarray, float]:
    """(theta_c - theta over the tensors ``names`` and all items as one float64 vector, its max |.|).

    Rows in ``items`` come from the explicit local training; the other rows of W1, W4,
    b4 are alpha * theta_j (the closed-form idle map), so their delta is (alpha - 1) theta_j.
    """
    g, loc = Layout(n_items).views(global_flat), Layout(items.size).views(local)
    out = np.empty(sum(g[name].size for name in names))
    start, top = 0, 0.0
    for name in names:
        size = g[name].size
        part = out[start : start + size]
        start += size
        if name in ("W1", "W4", "b4"):
            rows = (n_items, -1)
            top = max(top, delta_rows(g[name].reshape(rows), items, loc[name].reshape(items.size, -1),
                                      float(alpha), part.reshape(rows)))
        else:
            np.subtract(loc[name].ravel(), g[name].ravel(), out=part, dtype=np.float64)
            top = max(top, float(part.max()), -float(part.min()))
    return out, top


# ---------------------------------------------------------------- evaluation


@dataclass
class Scores:
    """Predictions for the test entries, and the metric the loss asks for."""

    metric: str
    value: float


def ndcg_at_k(users: np.ndarray, scores: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean over users with a test item of NDCG@k of ranking that user's test items.

    Binary gains; DCG = sum_{rank<k} gain / log2(rank + 2); a user with no positive test
    item scores 0 and is still averaged in [V-code ``metrics.py``, reference note §3.4].
    """
    order = np.lexsort((-scores, users))
    u, lab = users[order], labels[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], u.size]
    total = 0.0
    for a, b in zip(starts, ends):
        gains = lab[a:b][:k]
        ideal = np.sort(lab[a:b])[::-1][:k]
        disc = 1.0 / np.log2(np.arange(2, gains.size + 2))
        idcg = float(ideal @ disc)
        total += float(gains @ disc) / idcg if idcg > 0 else 0.0
    return total / max(starts.size, 1)


def evaluate(split: Split, loss: str, codes: np.ndarray, decoder_flat: np.ndarray) -> Scores:
    """Score the test entries from each user's code (N x 128) and the decoder."""
    n_items = split.train.n_items
    p = Layout(n_items).views(decoder_flat)
    h3 = decode_hidden(p, codes)
    test = split.test
    y = np.einsum("ij,ij->i", h3[test.users], p["W4"][test.items]) + p["b4"][test.items]
    t = targets(test.ratings, loss)
    if loss == "explicit":
        return Scores("test_rmse", float(np.sqrt(np.mean((y - t) ** 2))))
    return Scores("ndcg_at_10", ndcg_at_k(test.users, y, t, 10))


# ---------------------------------------------------------------- the trainer


def sparse_upload_bytes(active_rows: int, variant: str) -> int:
    """Bytes of a float32 upload of the dense hidden layers plus only the active item rows.

    PersonalFR: W3, b3 + per active item its W4 row, its b4 entry and a 4-byte index.
    FedAvg adds W2, b1, b2 and per active item its W1 row.
    """
    per_row = 4 * (HIDDEN + 1) + 4
    dense = 4 * (CODE * HIDDEN + HIDDEN)
    if variant == "fedavg":
        per_row += 4 * HIDDEN
        dense += 4 * (HIDDEN * CODE + HIDDEN + CODE)
    return dense + per_row * active_rows


class PersonalFRTrainer(RoundTrainer):
    """PersonalFR / FedAvg on the :class:`~fedmf.engine.Engine` (any aggregation backend).

    ``clients=None`` puts one user per client; an integer makes that many clients over
    a seeded random partition of the users (the code's ``iid`` split). The upload is
    the dense delta of the federated tensors divided by ``upload_scale`` (the backends'
    codecs take [-1, 1]). The test metric is computed every ``eval_every`` rounds and
    at the last round (``rounds`` of the config).

    ``client_streams=True`` gives each client its own random stream (batch order and
    dropout masks), seeded by (seed, client id), instead of one stream shared by all
    clients in turn: what clients on separate machines (:mod:`fedmf.flower`) can run.
    The default keeps the shared stream (the published runs).
    """

    def __init__(self, split: Split, *, config: FedConfig | None = None, clients: int | None = None,
                 seed: int = 0, upload_scale: float = 1.0, eval_every: int = 1,
                 client_streams: bool = False, kernel: str = "numba") -> None:
        self.cfg = config or FedConfig()
        self.cfg.check()
        if not upload_scale > 0 or eval_every < 1:
            raise ConfigError(f"need upload_scale > 0 and eval_every >= 1, got {upload_scale}, {eval_every}")
        if kernel not in KERNELS:
            raise ConfigError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.split, self.upload_scale, self.eval_every = split, float(upload_scale), int(eval_every)
        self.n_items = split.train.n_items
        self.seed, self.client_streams = int(seed), bool(client_streams)
        self.client_rngs: dict[int, np.random.Generator] = {}
        self.rng = np.random.default_rng(seed)
        self.global_flat = xavier_init(self.n_items, self.rng)
        self.initial_encoder = self.global_flat[: Layout(self.n_items).encoder_size].copy()
        rows = split.train.rows_by_user()
        groups = assign_users(split.train.n_users, clients, self.rng)
        self.data = [client_data(split, g, self.cfg.loss, rows) for g in groups]
        self.states: dict[int, ClientState] = {}
        self._pending: dict[int, ClientState] = {}
        self._round_info: dict[str, float] = {}

    # -- RoundTrainer

    def clients(self) -> list[int]:
        """Clients holding at least one training rating."""
        return [c for c, d in enumerate(self.data) if d.items.size]

    @property
    def federated(self) -> tuple[str, ...]:
        """Tensor names in the upload, in order."""
        return DECODER if self.cfg.variant == "personalfr" else ENCODER + DECODER

    def upload_layout(self) -> UploadLayout:
        m = self.n_items
        length = decoder_size(m) if self.cfg.variant == "personalfr" else Layout(m).size
        return UploadLayout(length=length, scale=self.upload_scale)

    def local_updates(self, round: int, users: list[int]) -> ClientUpdates:
        lr = self.cfg.lr_at(round - 1)
        vectors, seconds, losses, tops = {}, {}, [], []
        self._pending = {}
        for cid in users:
            t0 = time.perf_counter()
            vectors[cid], loss, self._pending[cid], top = self.client_update(cid, lr)
            seconds[cid] = time.perf_counter() - t0
            losses.append(loss)
            tops.append(top)
        active = [self.data[c].items.size for c in users]
        self._round_info = {
            "lr": lr,
            "train_loss": float(np.mean(losses)),
            "active_rows_per_client": float(np.mean(active)),
            "sparse_bytes_up_per_client": float(np.mean([sparse_upload_bytes(a, self.cfg.variant) for a in active])),
            "max_abs_upload": float(max(tops)),
        }
        return ClientUpdates(vectors, seconds)

    def server_step(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        """theta_federated += sum of the included deltas / their number (FedAvg of the copies)."""
        self.apply_aggregate(round, aggregate, included)
        for cid in included:
            self.states[cid] = self._pending[cid]
        self._pending = {}

    def apply_aggregate(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        """The server's part of the step: the federated tensors += the included clients' mean delta."""
        start = 0 if self.cfg.variant == "fedavg" else Layout(self.n_items).encoder_size
        self.global_flat[start:] += (aggregate / len(included)).astype(np.float32)

    def evaluate(self, round: int) -> dict[str, float]:
        metrics = dict(self._round_info)
        if round % self.eval_every == 0 or round == self.cfg.rounds:
            score = evaluate(self.split, self.cfg.loss, self.codes(), self.global_flat)
            metrics[score.metric] = score.value
        return metrics

    # -- the device side

    def client_update(self, cid: int, lr: float) -> tuple[np.ndarray, float, ClientState, float]:
        """Local training of client ``cid``: (upload in model units, mean loss, new state, max |upload|).

        The trainer's ``kernel`` picks the training loop: ``"numba"`` (one call per client,
        :func:`fedmf.autorec_kernel.train_local`) or ``"numpy"`` (one
        :func:`~fedmf.autorec.loss_and_grad` call per step). Both draw the same batches and
        dropout masks from the trainer's generator; they agree to float32 rounding.
        """
        cfg, data = self.cfg, self.data[cid]
        layout = Layout(data.items.size)
        local = gather_rows(self.global_flat, self.n_items, data.items)
        old = self.states.get(cid)
        state = ClientState(np.zeros(layout.size, np.float32)) if old is None else ClientState(
            old.momentum.copy(), old.idle_beta, old.encoder, old.rounds)
        if cfg.variant == "personalfr" and state.encoder is not None:
            local[: layout.encoder_size] = state.encoder
        batches, keeps = self.draw_batches(len(data.users), self.client_rng(cid))
        if self.kernel == "numba":
            sizes = np.array([b.size for b in batches])
            rows = np.zeros((len(batches), cfg.batch_users), np.int64)
            masks = np.zeros((len(batches), cfg.batch_users, CODE), np.float32)
            for t, (b, keep) in enumerate(zip(batches, keeps)):
                rows[t, : b.size], masks[t, : b.size] = b, keep
            losses = train_local(local, state.momentum, data.values, data.observed, rows, sizes, masks,
                                 cfg.loss == "implicit", lr, cfg.momentum, cfg.weight_decay, cfg.clip_norm)
        else:
            grad = np.empty_like(local)
            losses = []
            for b, keep in zip(batches, keeps):
                losses.append(loss_and_grad(local, layout, data.values[b], data.observed[b],
                                            cfg.loss, keep, grad))
                clip_global_norm(grad, cfg.clip_norm)
                nesterov_step(local, state.momentum, grad, lr, cfg)
        alpha, state.idle_beta = idle_row_map(len(batches), lr, state.idle_beta, cfg)
        if cfg.variant == "personalfr":
            state.encoder = local[: layout.encoder_size].copy()
        state.rounds += 1
        upload, top = local_delta(self.global_flat, local, self.n_items, data.items, alpha, self.federated)
        return upload, float(np.mean(losses)), state, top

    def draw_batches(self, n_users: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The local epochs' batches of the client's users and their dropout masks (0/1 float32),
        drawn from the client's stream ``rng``."""
        cfg, batches, keeps = self.cfg, [], []
        for _ in range(cfg.local_epochs):
            order = rng.permutation(n_users)
            for start in range(0, n_users, cfg.batch_users):
                b = order[start : start + cfg.batch_users]
                batches.append(b)
                keeps.append((rng.random((b.size, CODE)) >= DROPOUT).astype(np.float32))
        return batches, keeps

    def client_rng(self, cid: int) -> np.random.Generator:
        """The stream client ``cid`` draws from: the shared one, or its own (``client_streams``)."""
        if not self.client_streams:
            return self.rng
        if cid not in self.client_rngs:
            self.client_rngs[cid] = np.random.default_rng([self.seed, cid])
        return self.client_rngs[cid]

    def codes(self, clients=None) -> np.ndarray:
        """Each user's code h2 (no dropout) from the encoder its client would use (rows of
        the users of ``clients`` only, when given: a device's own; the others stay 0)."""
        m = self.n_items
        codes = np.zeros((self.split.train.n_users, CODE), np.float32)
        shared = self.global_flat.copy()
        if self.cfg.variant == "personalfr":  # a client that never trained has the initial encoder
            shared[: self.initial_encoder.size] = self.initial_encoder
        for cid in range(len(self.data)) if clients is None else clients:
            data = self.data[cid]
            flat = gather_rows(shared, m, data.items)
            state = self.states.get(cid)
            if self.cfg.variant == "personalfr" and state is not None:
                flat[: state.encoder.size] = state.encoder
            codes[data.users] = encode(Layout(data.items.size).views(flat), data.values)[1]
        return codes


def make_engine(split: Split, backend: str | AggregationBackend = "plain", *,
                config: FedConfig | None = None, clients: int | None = None, seed: int = 0,
                upload_scale: float = 1.0, eval_every: int = 1, observer=None,
                client_streams: bool = False, kernel: str = "numba") -> Engine:
    """An :class:`~fedmf.engine.Engine` running PersonalFR / FedAvg at the config's fraction."""
    trainer = PersonalFRTrainer(split, config=config, clients=clients, seed=seed,
                                upload_scale=upload_scale, eval_every=eval_every,
                                client_streams=client_streams, kernel=kernel)
    return Engine(trainer, make_backend(backend), participation=trainer.cfg.fraction,
                  seed=seed, observer=observer)


def participations(trainer: PersonalFRTrainer) -> dict[str, float]:
    """Min / mean / max over the eligible clients of the rounds each took part in (0 if never)."""
    counts = np.array([trainer.states[c].rounds if c in trainer.states else 0 for c in trainer.clients()])
    return {"min": int(counts.min()), "mean": float(counts.mean()), "max": int(counts.max())}


def summarize(engine: Engine) -> dict[str, object]:
    """The engine's summary plus the best-on-test round (as the code reports: optimistic)
    and the last round, the active rows and the sparse-upload bytes."""
    trainer = engine.trainer
    key = "test_rmse" if trainer.cfg.loss == "explicit" else "ndcg_at_10"
    scored = [r for r in engine.history if key in r.metrics]
    pick = min if key == "test_rmse" else max
    best = pick(scored, key=lambda r: r.metrics[key]) if scored else None
    mean = lambda k: float(np.mean([r.metrics[k] for r in engine.history])) if engine.history else 0.0
    out = engine.summary()
    out.update({
        key: best.metrics[key] if best else None,
        "best_round": best.round if best else None,
        "last_round": {key: scored[-1].metrics[key], "round": scored[-1].round} if scored else None,
        "variant": trainer.cfg.variant,
        "clients": len(trainer.data),
        "active_rows_per_client": mean("active_rows_per_client"),
        "sparse_bytes_up_per_client": mean("sparse_bytes_up_per_client"),
        "max_abs_upload": max(r.metrics["max_abs_upload"] for r in engine.history) if engine.history else 0.0,
        "participations_per_client": participations(trainer),
        "config": asdict(trainer.cfg),
    })
    return out
