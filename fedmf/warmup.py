"""Load the crypto layer's numba kernels once per process, before anything is timed.

The kernels are compiled with ``cache=True``, but the first call in a process still
compiles or loads them (about 0.1 s here), and that time would land in the first
client's reported cost. :func:`warm_numba_kernels` runs one tiny packed-Paillier round
(quantize, pack, unpack, dequantize) and one tiny SecAgg round (quantization, mask
expansion, bit packing, Shamir sharing) on throw-away data; later calls do nothing.
"""

from __future__ import annotations

import functools

import numpy as np
from secagg import make_backend


@functools.cache
def warm_numba_kernels() -> None:
    """Run every numba kernel of the packed-Paillier and SecAgg backends once."""
    updates = {c: np.full(8, 0.1 * c) for c in range(3)}
    # a 1024-bit key is an explicit opt-in: it encrypts nothing but these zeros-ish values
    make_backend("paillier_packed", key_bits=1024, allow_insecure_small_key=True).aggregate(updates)
    make_backend("secagg").aggregate(updates)
