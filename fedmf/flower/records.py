"""Names and conversions shared by the ClientApp and the ServerApp (flwr records, no pickle).

Messages (content records):

* :data:`RUN` (ConfigRecord): the run settings (:func:`fedmf.flower.models.settings`),
  sent by the server with every message (the nodes build the same trainer from them),
  plus :data:`ROUND_KEYS`: ``round``, ``chosen`` (the round's participants, a public
  schedule), ``included`` (the clients whose update is in the aggregate), ``clip`` (the
  backend's range for a node's upload: its number of clients);
* :data:`SHARED` (ArrayRecord): the shared model, from the server (not under
  ``paillier_packed``, where the nodes hold it).

A node's ``Context.state``: :data:`PRIVATE` (committed device state of its clients),
:data:`PENDING` (the state its last round produced) with :data:`PENDING_ROUND`,
:data:`STREAMS` (random streams, JSON text), and under ``paillier_packed``
:data:`SHARED` (its copy of the shared model).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

RUN, SHARED = "fedmf.run", "fedmf.shared"
#: the per-message keys of the RUN record (the rest are the run settings)
ROUND_KEYS = ("round", "chosen", "included", "clip")
PRIVATE, PENDING, PENDING_ROUND, STREAMS = "fedmf.private", "fedmf.pending", "fedmf.pending-round", "fedmf.streams"


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord | None) -> dict[str, np.ndarray]:
    return {} if record is None else {k: a.numpy() for k, a in record.items()}


def run_record(cfg: dict) -> ConfigRecord:
    return ConfigRecord({k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool))})
