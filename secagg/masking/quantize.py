"""The masking client's encoder: :mod:`secagg.quantize` into words mod a power-of-two modulus.

Encoding (one client, clip bound c, b bits, integer weight w): the crypto layer's one
quantizer (:mod:`secagg.quantize`): step s = c / L with L = 2^(b-1) - 1, and the client's
value w x (w summands) is clipped to [-w c, w c] and rounded stochastically (CSPRNG) to
q = floor((w x + w c) / s + r) in [0, 2 w L].

Headroom (Bonawitz et al. 2017, section 1.1: R = n (R_U - 1) + 1): the modulus must
exceed the largest possible sum over *all* clients of the round (not a neighbourhood):
R > 2L sum_i w_i. We use the smallest power of two above it, so masks need no
rejection sampling and the sum never wraps.

Decoding a sum S of included clients with total integer weight W:
sum_i w_i x_i ~= S s - c W (unbiased; error per coordinate < W s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..errors import HeadroomExceededError, InvalidInputError
from ..quantize import Encoder, Grid, check_quant_params, step_size
from .primitives import word_dtype
from .vectors import CHUNK

MAX_MODULUS_BITS = 64

__all__ = ["Quantizer", "check_quant_params", "dequantize", "modulus_for",
           "quantize", "step_size"]


def modulus_for(total_weight: int, bits: int) -> int:
    """Smallest power of two R with R > 2L * total_weight (sum never wraps).

    ``total_weight`` is the sum of integer weights of *every* client in the round (the
    number of clients for unit weights). Raises HeadroomExceededError above 2^64.
    """
    if total_weight < 1:
        raise InvalidInputError(f"total weight must be >= 1, got {total_weight}")
    max_sum = Grid(1.0, bits).top(total_weight)
    r = max_sum.bit_length()
    if r > MAX_MODULUS_BITS:
        raise HeadroomExceededError(
            f"sum of up to {max_sum} needs a {r}-bit modulus, above 2^{MAX_MODULUS_BITS}: "
            "lower bits, weights or the number of clients"
        )
    return 1 << max(r, 1)


@dataclass(frozen=True)
class Quantizer:
    """A client's encoder: clip to [-c, c], b-bit stochastic rounding of w x, integer weight w.

    ``rounding_key`` keys the AES-CTR stream of rounding bits; leave it None for a fresh
    ``os.urandom`` key per vector (the secure default). A fixed key makes the rounding
    reproducible, which only a test or benchmark that re-derives the quantized input
    needs. :meth:`stream` encodes a vector chunk by chunk, so a client can quantize,
    mask and pack one cache-sized chunk at a time (client_states.masked_input_message).
    """

    clip: float
    bits: int
    weight: int = 1
    rounding_key: bytes | None = None

    def __post_init__(self) -> None:
        check_quant_params(self.clip, self.bits)
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | np.integer) or self.weight < 0:
            raise InvalidInputError(f"weight must be an integer >= 0, got {self.weight!r}")
        if self.rounding_key is not None and len(self.rounding_key) != 32:
            raise InvalidInputError("rounding_key must be 32 bytes")

    @property
    def grid(self) -> Grid:
        return Grid(self.clip, self.bits)

    def stream(self, modulus: int) -> Encoder:
        """A fresh encoder for one vector under the round modulus (headroom checked)."""
        if self.grid.top(self.weight) >= modulus:
            raise HeadroomExceededError(
                f"weight {self.weight} x {self.bits}-bit values do not fit modulus {modulus}"
            )
        return self.grid.encoder(int(self.weight), weighted=True, rounding_key=self.rounding_key)

    def encode(self, x: np.ndarray, modulus: int) -> np.ndarray:
        """The whole vector's words (uint32 or uint64, by ``modulus``) holding q(w x)."""
        x = check_float_vector(x)
        stream = self.stream(modulus)
        out = np.empty(x.size, dtype=word_dtype(modulus))
        for start in range(0, x.size, CHUNK):
            stream.encode_into(x[start:start + CHUNK], out[start:start + CHUNK])
        return out


def check_float_vector(x: np.ndarray) -> np.ndarray:
    """A 1-D float64 vector (NaN and inf are caught while encoding)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise InvalidInputError(f"quantize needs a 1-D float vector, got shape {x.shape}")
    return x


def check_finite_vector(x: np.ndarray) -> np.ndarray:
    """A 1-D float64 vector with no NaN or inf (one pass, no temporary array)."""
    x = check_float_vector(x)
    if _count_nonfinite(x):
        raise InvalidInputError("input has NaN or inf")
    return x


@njit(cache=True)
def _count_nonfinite(x):
    bad = 0
    for i in range(x.shape[0]):
        bad += not (abs(x[i]) < np.inf)
    return bad


def quantize(x: np.ndarray, clip: float, bits: int, *, weight: int = 1,
             modulus: int | None = None, rounding_key: bytes | None = None) -> np.ndarray:
    """Clip, stochastically round (CSPRNG) the weighted value w x of ``weight`` w summands.

    Returns the words (uint32 or uint64, by ``modulus``) holding q in [0, 2 w L].
    """
    q = Quantizer(clip, bits, weight, rounding_key)
    return q.encode(x, modulus_for(max(int(weight), 1), bits) if modulus is None else modulus)


def dequantize(total: np.ndarray, clip: float, bits: int, total_weight: int) -> np.ndarray:
    """sum_i w_i x_i from the exact modular sum S of the clients' encodings (:meth:`Grid.dequantize`)."""
    return Grid(clip, bits).dequantize(total, total_weight)
