"""Our SecAgg / SecAgg+ over Flower's Message API (optional: ``pip install "fedmf-toolkit[flower]"``).

* :func:`secagg_mod` (client mod) runs a :class:`~secagg.masking.halves.MaskingDevice`
  on each SuperNode: the same state machine and wire bytes as :mod:`secagg.masking`,
  carried in a ``ConfigRecord`` (bytes), its state frozen to bytes in ``Context.state``
  between messages (no pickle);
* :class:`SecAggWorkflow` (server) runs the backend's
  :class:`~secagg.masking.halves.MaskingServer` over a Flower ``Grid``: nodes that fail,
  reply with an error or time out at any stage are dropouts, the sum is exact for the
  survivors, and a round below the threshold raises (never silently skipped).

Switching a Flower app from Flower's SecAgg+ to ours changes its mod and its workflow
(README, "Running on Flower"). Only this subpackage imports ``flwr``; the rest of
:mod:`secagg` works without it.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the no-flwr import test
    raise ImportError(
        "secagg.flower needs Flower: pip install 'fedmf-toolkit[flower]' (flwr[simulation]>=1.20)"
    ) from exc

from .mod import make_secagg_mod, secagg_mod
from .records import RECORD, STAGES, STATE
from .workflow import FlowerRound, SecAggWorkflow

__all__ = ["RECORD", "STAGES", "STATE", "FlowerRound", "SecAggWorkflow", "make_secagg_mod", "secagg_mod"]
