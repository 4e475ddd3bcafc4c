"""Record what an honest-but-curious server sees during a FedMF run, through any backend.

The recorder wraps :class:`fedmf.trainer.FedMFTrainer`: before each round it keeps the
item matrix V' the server distributes, and through the trainer's ``observer`` hook it
keeps the backend's :class:`~secagg.ServerView`: per client, the vector the server can
decode with public information only (the upload itself for ``plain``, uniform noise for
SecAgg masking, nothing for Paillier), the declared PartText support, and the aggregate
when it is in clear. Nothing else reaches the attack.

(For a Paillier backend the server does not hold V' in clear either; the recorder still
keeps the trainer's copy, which the attack cannot use without per-client uploads.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedmf.data import Split
from fedmf.model import ModelConfig
from fedmf.trainer import FedMFTrainer
from secagg import AggregationBackend, make_backend
from secagg.errors import InvalidInputError

from .gradient_leakage import PublicParams, RoundObservation


@dataclass
class RoundRecord:
    """The server's view of one round: V' before it, decoded uploads, supports, aggregate."""

    round: int
    V: np.ndarray
    #: cid -> (row indices, rows): the non-zero rows of the decoded upload, in model units
    per_client: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    support: dict[int, np.ndarray] = field(default_factory=dict)
    aggregate: np.ndarray | None = None


@dataclass
class ServerRecord:
    """Everything the server observed in a run, plus the public parameters."""

    backend: str
    mode: str
    params: PublicParams
    n_items: int
    users: list[int]
    rounds: list[RoundRecord]
    #: backend facts of the last round (e.g. SecAgg's (k, t), quantisation)
    info: dict[str, object] = field(default_factory=dict)

    def observations(self, cid: int, last: int = 2) -> list[RoundObservation]:
        """Client ``cid``'s observations in the ``last`` recorded rounds (oldest first)."""
        out = []
        for rec in self.rounds[-last:]:
            upload = None
            if cid in rec.per_client:
                rows, values = rec.per_client[cid]
                upload = np.zeros((self.n_items, values.shape[1]))
                upload[rows] = values
            support = rec.support.get(cid) if self.mode == "part" else None
            out.append(RoundObservation(upload, rec.V, support, rec.round))
        return out


def public_params(trainer: FedMFTrainer, order: str | None = "same") -> PublicParams:
    """The hyperparameters an FedMF server knows (``order=None``: the server does not)."""
    cfg: ModelConfig = trainer.config
    return PublicParams(
        lr=cfg.lr, reg=cfg.reg, mu=trainer.mu, factors=cfg.factors, biases=cfg.biases,
        order=cfg.order if order == "same" else order, rating_scale=trainer.split.train.rating_scale,
    )


def record_run(
    split: Split,
    backend: str | AggregationBackend,
    *,
    config: ModelConfig | None = None,
    mode: str = "full",
    rounds: int = 2,
    users: np.ndarray | None = None,
    seed: int = 0,
    backend_options: dict[str, object] | None = None,
    order_known: bool = True,
) -> ServerRecord:
    """Train ``rounds`` FedMF rounds over ``backend`` and return what the server saw.

    ``backend`` is a name (built with ``record_view=True`` and ``backend_options``) or an
    instance, which must have been built with ``record_view=True``.
    """
    if isinstance(backend, str):
        # FedMF gradients may leave [-clip, clip]: clipped (counted in info) unless options say otherwise
        backend = make_backend(backend, record_view=True, **({"out_of_range": "clip"} | (backend_options or {})))
    elif not backend.record_view:
        raise InvalidInputError("the backend must be built with record_view=True to record the server view")
    records: list[RoundRecord] = []
    info: dict[str, object] = {}

    def observer(rnd, result, uploads, upload_scale):
        rec = records[-1]
        width = trainer.config.row_length
        for cid, vec in result.view.per_client.items():
            rows = vec.reshape(-1, width) * upload_scale
            nonzero = np.flatnonzero(np.any(rows != 0.0, axis=1))
            rec.per_client[cid] = (nonzero, rows[nonzero].copy())
        rec.support = dict(result.view.support)
        rec.aggregate = None if result.view.aggregate is None else result.view.aggregate.copy()
        info.clear()
        info.update(result.info)

    trainer = FedMFTrainer(split, backend, config=config, mode=mode, seed=seed, users=users,
                           observer=observer)
    for _ in range(rounds):
        records.append(RoundRecord(trainer.round + 1, trainer.V.copy()))
        trainer.run_round()
    return ServerRecord(
        backend=backend.name, mode=mode,
        params=public_params(trainer, "same" if order_known else None),
        n_items=trainer.n_items, users=trainer.participants(), rounds=records, info=info,
    )
