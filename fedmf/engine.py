"""The federated round loop, written once for every trainer and every aggregation backend.

A trainer (a subclass of :class:`RoundTrainer`, one file per trainer) supplies what is
specific to its algorithm; the :class:`Engine` runs the loop and never names a trainer
or a backend. One round:

1. choose the participants: all of ``trainer.clients()``, or a seeded random
   ``participation`` fraction p of them (the schedule is public, not key material):
   max(1, ceil(p N)) of the N eligible clients (:func:`cohort_size`, the PersonalFR
   code's ``int(np.ceil(fraction * num_nodes))``; 0.1 of 943 users is 95);
2. ``trainer.local_updates(round, users)`` runs every participant's device-side update on
   its own data (a batch at once, so a trainer can vectorise) and returns the uploads in
   model units, the device seconds per client and, for sparse rounds, each client's
   declared support;
3. the uploads, divided by ``layout.scale`` into the [-1, 1] range every backend's codec
   takes (in place: the engine owns them, see :class:`ClientUpdates`), go through
   ``backend.aggregate`` (the only call into the crypto layer), with the caller's
   per-client ``progress`` hook if any;
4. ``trainer.server_step(round, aggregate, included)`` applies the aggregate (back in model
   units) and commits the device state of the included clients;
5. ``observer(round, result, uploads, scale)`` (optional) sees the backend's round
   result and the uploads as sent, for attacks and audits;
6. ``trainer.evaluate(round)`` returns the round's metrics;
7. the cost is accounted (:class:`RoundRecord`) and appended to ``history``.

Before round 1, :meth:`RoundTrainer.setup` may aggregate public statistics once through
the same backend (FedMF's global mean and item counts). :meth:`Engine.summary` gives the
JSON summary (means of the per-round cost and the history); :func:`best_round` picks the
round with the best validation metric (ties: the latest, as the PFedRec code's ``>=``).
:meth:`Engine.run` with ``progress=True`` draws one bar over the whole run that advances
per client upload, with an ETA (:class:`fedmf.progress.ClientProgress`).
"""

from __future__ import annotations

import abc
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from secagg import AggregationBackend, RoundResult, make_backend

from .errors import ConfigError
from .progress import ClientProgress

#: observer(round, backend result, uploads as sent, upload scale)
Observer = Callable[[int, RoundResult, dict[int, np.ndarray], float], None]
#: aggregate(vectors, **backend options) -> RoundResult, as handed to RoundTrainer.setup
Aggregate = Callable[..., RoundResult]


@dataclass(frozen=True)
class UploadLayout:
    """How a trainer's uploads are laid out: vector length, scale into [-1, 1], block size.

    ``sparse`` rounds pass each client's support (blocks of ``block_size`` entries it
    may fill) to the backend, which then learns the support: a leak by design (PartText).
    ``dense_fallback`` lets a backend that cannot aggregate sparsely run such a round
    densely (the backend contract's named opt-in, recorded in ``info["sparse"]``).
    """

    length: int
    scale: float = 1.0
    block_size: int = 1
    sparse: bool = False
    dense_fallback: bool = False


@dataclass
class ClientUpdates:
    """The device side of one round: uploads in model units and device seconds per client.

    The engine takes ownership of ``vectors``: float64 arrays are divided by the layout's
    scale in place (a round's uploads can be hundreds of MB), so a trainer must not keep
    using them after :meth:`RoundTrainer.local_updates` returns.
    """

    vectors: dict[int, np.ndarray]
    seconds: dict[int, float]
    support: dict[int, np.ndarray] | None = None


class RoundTrainer(abc.ABC):
    """What a federated algorithm supplies to the :class:`Engine`."""

    @abc.abstractmethod
    def clients(self) -> list[int]:
        """The clients that may take part (ids are the backend's client ids)."""

    @abc.abstractmethod
    def upload_layout(self) -> UploadLayout:
        """The layout of every client's upload this run."""

    @abc.abstractmethod
    def local_updates(self, round: int, users: list[int]) -> ClientUpdates:
        """Run the device-side update of ``users`` on their own data; nothing is committed yet."""

    @abc.abstractmethod
    def server_step(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        """Apply the round's aggregate (model units); commit the included clients' device state."""

    @abc.abstractmethod
    def evaluate(self, round: int) -> dict[str, float]:
        """The metrics after ``round`` (plain floats)."""

    def setup(self, aggregate: Aggregate) -> None:  # noqa: B027 - optional hook
        """Aggregate public statistics once before round 1 (default: nothing)."""


@dataclass
class RoundRecord:
    """Measured figures of one round; client figures are means over the included clients.

    ``client_seconds`` is what a device pays: its local update plus its protocol work,
    including ``shared_client_seconds``, its share of the work every client runs on
    identical inputs (decrypting the shared aggregate), which the simulation computes
    once per round and charges to each client at its measured cost
    (:attr:`secagg.RoundCost.shared_client_seconds`).
    """

    round: int
    metrics: dict[str, float]
    participants: int
    seconds: float
    client_seconds: float
    server_seconds: float
    bytes_up_per_client: float
    bytes_down_per_client: float
    shared_client_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """One flat JSON object: round, the metrics, then the cost."""
        out = asdict(self)
        metrics = out.pop("metrics")
        return {"round": out.pop("round"), **metrics, **out}

    def line(self, keys: tuple[str, ...] = ()) -> str:
        shown = keys or tuple(self.metrics)
        values = "  ".join(f"{k} {self.metrics[k]:.4f}" for k in shown if k in self.metrics)
        return (
            f"round {self.round:3d}  {values}  client {self.client_seconds * 1e3:8.1f} ms  "
            f"server {self.server_seconds * 1e3:8.1f} ms  up {self.bytes_up_per_client / 1024:8.1f} KiB/client"
        )


@dataclass
class Engine:
    """Runs rounds of ``trainer`` over ``backend`` (see the module docstring)."""

    trainer: RoundTrainer
    backend: AggregationBackend
    participation: float = 1.0
    seed: int = 0
    observer: Observer | None = None
    round: int = 0
    history: list[RoundRecord] = field(default_factory=list)
    setup_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.participation <= 1:
            raise ConfigError(f"participation must be in (0, 1], got {self.participation}")
        self.backend = make_backend(self.backend)
        self._rng = np.random.default_rng(self.seed)
        self.setup_seconds = self._setup()

    def _setup(self) -> float:
        cost = []

        def aggregate(vectors, **options):
            result = self.backend.aggregate(vectors, **options)
            cost.append(result.cost.setup_seconds)
            return result

        t0 = time.perf_counter()
        self.trainer.setup(aggregate)
        return time.perf_counter() - t0 + sum(cost)

    def choose_participants(self) -> list[int]:
        """All eligible clients, or a seeded random ``participation`` share of them (sorted)."""
        return choose_participants(self.trainer.clients(), self.participation, self._rng)

    def participants_per_round(self) -> int:
        """How many clients each round chooses (the seeded choice itself is not drawn)."""
        eligible = len(self.trainer.clients())
        return eligible if self.participation >= 1 else cohort_size(self.participation, eligible)

    def run_round(self, progress: Callable[[int], object] | None = None) -> RoundRecord:
        """Run one round and return (and keep) its record; ``progress(client_id)`` is the
        backend's per-client hook (:mod:`secagg.backend`), called as each upload is absorbed."""
        t_round = time.perf_counter()
        rnd = self.round + 1
        users = self.choose_participants()
        layout = self.trainer.upload_layout()
        updates = self.trainer.local_updates(rnd, users)
        uploads = {u: to_codec_units(v, layout.scale) for u, v in updates.vectors.items()}
        sparse = ({"support": updates.support, "block_size": layout.block_size,
                   "dense_fallback": layout.dense_fallback} if layout.sparse else {})
        result = self.backend.aggregate(uploads, **sparse, progress=progress)
        t_server = time.perf_counter()
        self.trainer.server_step(rnd, result.aggregate * layout.scale, result.included)
        server_step_seconds = time.perf_counter() - t_server
        self.round = rnd
        if self.observer is not None:
            self.observer(rnd, result, uploads, layout.scale)
        metrics = self.trainer.evaluate(rnd)
        cost = result.cost
        record = RoundRecord(
            round=rnd,
            metrics=metrics,
            participants=len(result.included),
            seconds=time.perf_counter() - t_round,
            client_seconds=float(np.mean(
                [updates.seconds[u] + cost.client_seconds.get(u, 0.0) for u in result.included]
            )),
            server_seconds=cost.server_seconds + server_step_seconds,
            bytes_up_per_client=cost.mean_bytes_up(),
            bytes_down_per_client=cost.mean_bytes_down(),
            shared_client_seconds=float(np.mean(
                [cost.shared_client_seconds.get(u, 0.0) for u in result.included]
            )),
        )
        self.history.append(record)
        return record

    def run(self, rounds: int, *, progress: bool = False, show: tuple[str, ...] = (),
            bar: bool = True) -> list[RoundRecord]:
        """Run ``rounds`` rounds; ``progress`` prints one line per round (metrics ``show``) and,
        on a terminal and unless ``bar`` is False, one bar over all rounds x participants
        that advances per client upload, with an ETA."""
        if rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {rounds}")
        if not progress:
            return [self.run_round() for _ in range(rounds)]
        out = []
        with ClientProgress(rounds, self.participants_per_round(), enabled=bar) as shown:
            for _ in range(rounds):
                out.append(self.run_round(progress=shown.client_done))
                shown.round_done(out[-1].line(show))
        return out

    def summary(self) -> dict[str, object]:
        """Mean per-round cost, setup seconds and the full history."""
        h = self.history
        return {
            "backend": self.backend.name,
            "rounds": len(h),
            "participation": self.participation,
            **cost_means(h),
            "setup_seconds": self.setup_seconds,
            "history": [r.as_dict() for r in h],
        }


def cohort_size(participation: float, eligible: int) -> int:
    """Clients a round samples: max(1, ceil(p N)) for a fraction p of N eligible clients.

    The PersonalFR code's rule (``int(np.ceil(fraction * num_nodes))``; 0.1 of 943 users
    is 95); p N is first rounded to 9 decimals so float error never adds a client
    (0.07 x 100 is 7.000000000000001 in floats: 7 clients, not 8).
    """
    if not 0 < participation <= 1:
        raise ConfigError(f"participation must be in (0, 1], got {participation}")
    return max(1, math.ceil(round(participation * eligible, 9)))


def choose_participants(clients, participation: float, rng: np.random.Generator) -> list[int]:
    """All ``clients``, or a random ``participation`` share of them drawn from ``rng`` (sorted).

    The engine's rng is ``default_rng(seed)``: a transport that draws from the same seed
    (``fedmf.flower``) chooses the same clients round by round.
    """
    clients = list(clients)
    if participation >= 1:
        return clients
    n = cohort_size(participation, len(clients))
    return sorted(int(c) for c in rng.choice(clients, n, replace=False))


def to_codec_units(upload: np.ndarray, scale: float) -> np.ndarray:
    """``upload / scale``, in place when ``upload`` is a writable float64 array (same values);
    ``upload`` itself when scale is 1."""
    if scale == 1.0:
        return upload
    if isinstance(upload, np.ndarray) and upload.dtype == np.float64 and upload.flags.writeable:
        return np.divide(upload, scale, out=upload)
    return upload / scale


def cost_means(history) -> dict[str, float]:
    """The per-round means of the cost fields every round log carries (0 with no rounds)."""
    mean = lambda key: float(np.mean([getattr(r, key) for r in history])) if history else 0.0
    return {
        "seconds_per_round": mean("seconds"),
        "client_seconds_per_round": mean("client_seconds"),
        "shared_client_seconds_per_round": mean("shared_client_seconds"),
        "server_seconds_per_round": mean("server_seconds"),
        "bytes_up_per_client": mean("bytes_up_per_client"),
        "bytes_down_per_client": mean("bytes_down_per_client"),
    }


def best_round(history: list[RoundRecord], key: str) -> RoundRecord:
    """The round with the highest ``metrics[key]``; ties go to the latest round."""
    if not history:
        raise ConfigError("no rounds have been run")
    if any(key not in r.metrics for r in history):
        raise ConfigError(f"metric {key!r} is missing from the history (have {sorted(history[0].metrics)})")
    best = history[0]
    for record in history[1:]:
        if record.metrics[key] >= best.metrics[key]:
            best = record
    return best


def write_json(path: Path, summary: Mapping[str, object]) -> None:
    """Write a run's JSON summary (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
