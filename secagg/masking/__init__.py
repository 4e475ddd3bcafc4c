"""SecAgg and SecAgg+ pairwise-mask secure aggregation (Bonawitz et al. 2017; Bell et al. 2020).

* :mod:`.primitives`: X25519, HKDF-SHA256 labels, AES-256-GCM, AES-256-CTR mask PRG
  (run on OpenSSL's GCM engine), Ed25519.
* :mod:`.shamir`: vectorised prime-field Shamir with cached Lagrange coefficients.
* :mod:`.messages`: versioned, length-checked wire messages (no pickle).
* :mod:`.client_states` / :mod:`.server_states`: one state per protocol round.
* :mod:`.graph`: Harary graph, session-derived relabelling, automatic (k, t) finder.
* :mod:`.quantize`: the client's chunk-by-chunk encoder (``Quantizer``) on the crypto
  layer's one quantizer (:mod:`secagg.quantize`), headroom-sized modulus.
* :mod:`.driver`: in-process simulation with dropouts at every stage.
* :mod:`.halves`: the backends' device half (a client that encodes its own vector) and
  server half (SecAggServer + decoding), :mod:`secagg.split`.
* :mod:`.snapshot`: a client's state as bytes between two messages (no pickle).
* :mod:`.backend`: the ``"secagg"`` and ``"secagg+"`` aggregation backends.
"""

from .client_states import SecAggClient
from .driver import STAGES, DriverResult, make_config, run_round
from .graph import GraphParams, find_parameters
from .messages import RoundConfig
from .quantize import Quantizer, dequantize, modulus_for, quantize
from .server_states import SecAggServer

__all__ = [
    "STAGES",
    "DriverResult",
    "GraphParams",
    "Quantizer",
    "RoundConfig",
    "SecAggClient",
    "SecAggServer",
    "dequantize",
    "find_parameters",
    "make_config",
    "modulus_for",
    "quantize",
    "run_round",
]
