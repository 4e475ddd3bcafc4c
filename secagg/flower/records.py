"""Names and layouts shared by the client mod and the server workflow.

A protocol message is a ``ConfigRecord`` named :data:`RECORD` in the message content:
``stage`` (one of :data:`STAGES`) and ``payload`` (the :mod:`secagg.masking.messages`
bytes). The setup message also carries the node's protocol ``client-id`` and the
encoding (``clip``, ``precision-bits``, ``out-of-range``). The masked-input message
carries the model as an ``ArrayRecord`` (:data:`ARRAYS`) and the caller's train config
(:data:`TRAIN_CONFIG`) for the node's own train function. Between messages a node keeps
``ConfigRecord`` :data:`STATE` in ``Context.state``: the next ``stage`` and its frozen
``device`` bytes.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

RECORD = "secagg"
STATE = "secagg.state"
ARRAYS = "arrays"
TRAIN_CONFIG = "config"
#: our stage names, by the SecAggServer stage whose replies they collect
STAGES = {"AdvertiseKeys": "setup", "ShareKeys": "share-keys",
          "MaskedInputCollection": "masked-input", "Unmasking": "unmask"}
#: the stage a node accepts after each one ("unmask" again: a lost reply is re-requested)
NEXT_STAGE = {"setup": "share-keys", "share-keys": "masked-input", "masked-input": "unmask",
              "unmask": "unmask"}


def flatten(record: ArrayRecord) -> np.ndarray:
    """All arrays of ``record``, in key order, as one float64 vector."""
    parts = [np.asarray(a.numpy(), dtype=np.float64).ravel() for a in record.values()]
    return np.concatenate(parts) if parts else np.zeros(0)


def layout(record: ArrayRecord) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) of each array, to rebuild a flat sum with :func:`unflatten`."""
    return [(key, tuple(a.shape), str(a.dtype)) for key, a in record.items()]


def unflatten(vector: np.ndarray, shapes: list[tuple[str, tuple[int, ...], str]]) -> ArrayRecord:
    """The inverse of :func:`flatten` (float64 arrays of the recorded shapes)."""
    out, pos = {}, 0
    for key, shape, _ in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out[key] = Array(np.asarray(vector[pos:pos + size]).reshape(shape))
        pos += size
    return ArrayRecord(out)
