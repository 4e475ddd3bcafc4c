"""secagg: the crypto layer of the toolkit, usable on its own.

* :mod:`secagg.paillier`: fast Paillier with numpy vectors and BatchCrypt-style packing.
* :mod:`secagg.masking`: SecAgg / SecAgg+ pairwise-mask secure aggregation.
* :mod:`secagg.backend`: the aggregation backend interface trainers and other FL code call.

This package imports nothing from ``fedmf`` or ``attacks``.
"""

from .backend import (
    AggregationBackend,
    PlainBackend,
    RoundCost,
    RoundInfo,
    RoundResult,
    ServerView,
    available_backends,
    backend_options,
    make_backend,
    register_backend,
)
from .errors import SecaggError, TooFewInputsError

__all__ = [
    "AggregationBackend",
    "PlainBackend",
    "RoundCost",
    "RoundInfo",
    "RoundResult",
    "SecaggError",
    "ServerView",
    "TooFewInputsError",
    "available_backends",
    "backend_options",
    "make_backend",
    "register_backend",
]
