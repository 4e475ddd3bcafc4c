"""Fixed-point encoding of float vectors for modular secure aggregation.

Encoding (one client, clip bound c, b bits): clip x to [-c, c], map to
u = (x + c) / step with step = 2c / (2^b - 1), and round stochastically
q = floor(u) + [r < u - floor(u)] with r uniform (32-bit) from a CSPRNG, so E[q] = u and
q is in [0, 2^b - 1]. A client with integer weight w sends w q.

Headroom (Bonawitz et al. 2017, section 1.1: R = n (R_U - 1) + 1): the modulus must
exceed the largest possible sum over *all* clients of the round (not a neighbourhood):
R > (2^b - 1) * sum_i w_i. We use the smallest power of two above it, so masks need no
rejection sampling and the sum never wraps.

Decoding a sum S of included clients with total integer weight W:
sum_i w_i x_i ~= S step - c W (unbiased; error per coordinate <= W step).
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from ..errors import HeadroomExceededError, InvalidInputError
from .primitives import CtrStream, word_dtype

MAX_MODULUS_BITS = 64
CHUNK = 1 << 16  #: entries quantized per CSPRNG refill


def check_quant_params(clip: float, bits: int) -> None:
    if not (isinstance(clip, int | float) and np.isfinite(clip) and clip > 0):
        raise InvalidInputError(f"clip must be a finite number > 0, got {clip!r}")
    if not isinstance(bits, int | np.integer) or not 1 <= bits <= 62:
        raise InvalidInputError(f"bits must be an integer in [1, 62], got {bits!r}")


def step_size(clip: float, bits: int) -> float:
    """Width of one quantization level: 2c / (2^b - 1)."""
    return 2.0 * clip / ((1 << bits) - 1)


def modulus_for(total_weight: int, bits: int) -> int:
    """Smallest power of two R with R > (2^b - 1) * total_weight (sum never wraps).

    ``total_weight`` is the sum of integer weights of *every* client in the round (the
    number of clients for unit weights). Raises HeadroomExceededError above 2^64.
    """
    if total_weight < 1:
        raise InvalidInputError(f"total weight must be >= 1, got {total_weight}")
    max_sum = ((1 << bits) - 1) * int(total_weight)
    r = max_sum.bit_length()
    if r > MAX_MODULUS_BITS:
        raise HeadroomExceededError(
            f"sum of up to {max_sum} needs a {r}-bit modulus, above 2^{MAX_MODULUS_BITS}: "
            "lower bits, weights or the number of clients"
        )
    return 1 << max(r, 1)


def quantize(x: np.ndarray, clip: float, bits: int, *, weight: int = 1,
             modulus: int | None = None) -> np.ndarray:
    """Clip, stochastically round (CSPRNG) and multiply by the integer ``weight``.

    Returns the words (uint32 or uint64, by ``modulus``) holding w q, q in [0, 2^b - 1].
    """
    check_quant_params(clip, bits)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise InvalidInputError(f"quantize needs a 1-D float vector, got shape {x.shape}")
    if not isinstance(weight, int | np.integer) or weight < 0:
        raise InvalidInputError(f"weight must be an integer >= 0, got {weight!r}")
    modulus = modulus_for(max(int(weight), 1), bits) if modulus is None else modulus
    if ((1 << bits) - 1) * int(weight) >= modulus:
        raise HeadroomExceededError(f"weight {weight} x {bits}-bit values do not fit modulus {modulus}")
    dtype = word_dtype(modulus)
    out = np.empty(x.size, dtype=dtype)
    inv_step, top = 1.0 / step_size(clip, bits), float((1 << bits) - 1)
    # random words come chunk by chunk from one CSPRNG stream into a small reused buffer
    rng = CtrStream(os.urandom(32))
    for start in range(0, x.size, CHUNK):
        stop = min(start + CHUNK, x.size)
        bad = _quantize(x[start:stop], float(clip), inv_step, top, rng.words32(stop - start),
                        out[start:stop])
        if bad:
            raise InvalidInputError("quantize needs finite values: the vector has NaN or inf")
    if weight != 1:
        out *= dtype.type(weight)
    return out


@njit(cache=True)
def _quantize(x, clip, inv_step, top, rand32, out):
    """out[i] = floor(u) + [r_i 2^-32 < frac(u)],  u = (clip(x_i) + c) / step.

    Returns the number of non-finite inputs (the caller raises if any).
    """
    bad = 0
    for i in range(x.shape[0]):
        xi = x[i]
        if not np.isfinite(xi):
            bad += 1
            continue
        v = min(max(xi, -clip), clip)
        u = (v + clip) * inv_step
        q = np.floor(u)
        if rand32[i] * 2.3283064365386963e-10 < u - q:
            q += 1.0
        out[i] = min(q, top)
    return bad


def dequantize(total: np.ndarray, clip: float, bits: int, total_weight: int) -> np.ndarray:
    """sum_i w_i x_i from the exact modular sum S of weighted quantized inputs."""
    check_quant_params(clip, bits)
    return np.asarray(total, dtype=np.float64) * step_size(clip, bits) - clip * float(total_weight)


def integer_weights(weights: dict[int, float], weight_bits: int = 20) -> tuple[dict[int, int], float]:
    """Map float weights to integers exactly when possible.

    Weights that are all integers (e.g. example counts, or 1.0) are used as they are
    (scale 1, exact). Otherwise they are scaled by 2^s with the largest s that keeps
    max w * 2^s < 2^weight_bits and rounded; ``scale`` = 2^s is returned so that
    sum w_int x / scale approximates sum w x with relative weight error <= 2^-s-1 / w.
    """
    vals = np.array(list(weights.values()), dtype=np.float64)
    if vals.size == 0 or np.any(~np.isfinite(vals)) or np.any(vals < 0):
        raise InvalidInputError("weights must be finite and >= 0")
    if np.all(vals == np.round(vals)) and vals.max() < 2.0**62:
        return {cid: int(w) for cid, w in weights.items()}, 1.0
    top = float(vals.max())
    shift = weight_bits - 1 - int(np.ceil(np.log2(top))) if top > 0 else 0
    scale = float(2.0**shift)
    return {cid: int(round(w * scale)) for cid, w in weights.items()}, scale
