"""The crypto layer's one quantizer: clip, a symmetric b-bit grid, CSPRNG stochastic rounding.

SecAgg masking (:mod:`secagg.masking.quantize`) and packed Paillier
(:mod:`secagg.paillier.packing`) both encode with it, so the same (clip c, bits b) means
the same grid and the same error bound in every backend.

Grid. b bits give L = 2^(b-1) - 1 and the 2L + 1 = 2^b - 1 levels k s, k in [-L, L], with
step s = c / L on [-c, c]; zero is a level (BatchCrypt's signed b-bit range, Zhang et al.,
USENIX ATC 2020, section 4).

Encoding a value that stands for C summands (C values of [-c, c] summed; C = 1 for one
value, C = w for a client of integer weight w): clip v to [-C c, C c] and round
stochastically to the level, stored in offset binary (unsigned)

    q = C L + floor(v / s + r) = floor((v + C c) / s + r),   r uniform on {0, 2^-16, ..., 1 - 2^-16},

so q is in [0, 2 C L], q - C L is the signed level, and 0 encodes to exactly C L. r comes from an AES-256-CTR
keystream (:mod:`secagg.keystream`) keyed by ``os.urandom`` (never numpy's generators).
floor(u + r) is floor(u) + 1 with probability ceil(frac(u) 2^16) / 2^16, so E[q] equals
(v + C c) / s up to a bias below 2^-16 of a step, far under the rounding's own standard
deviation (up to half a step); 16 random bits per entry halve the keystream against 32.

Decoding. Encodings add level-wise: the sum S of encodings with total count W (summands)
is in [0, 2 W L] and

    sum of the encoded values ~= (S - W L) s = S s - W c,

unbiased, with error below W s per coordinate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from numba import njit

from .errors import InvalidInputError
from .keystream import CtrStream

MIN_BITS, MAX_BITS = 2, 62
_RANDOM_UNIT = 1.0 / (1 << 16)


def check_quant_params(clip: float, bits: int) -> None:
    """Refuse a clip bound that is not a finite number > 0, or bits outside [2, 62]."""
    if isinstance(clip, bool) or not (
        isinstance(clip, int | float | np.floating) and math.isfinite(clip) and clip > 0
    ):
        raise InvalidInputError(f"clip must be a finite number > 0, got {clip!r}")
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidInputError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


def level_bound(bits: int) -> int:
    """L = 2^(b-1) - 1: the largest |signed level| of one summand."""
    return (1 << (int(bits) - 1)) - 1


def step_size(clip: float, bits: int) -> float:
    """Width of one level: s = c / L = 2c / (2^b - 2)."""
    return clip / level_bound(bits)


@dataclass(frozen=True)
class Grid:
    """The levels of (clip c, bits b): step s = c / L, encodings of C summands in [0, 2 C L]."""

    clip: float
    bits: int

    def __post_init__(self) -> None:
        check_quant_params(self.clip, self.bits)

    @property
    def level(self) -> int:
        """L = 2^(b-1) - 1."""
        return level_bound(self.bits)

    @property
    def step(self) -> float:
        """s = c / L."""
        return step_size(self.clip, self.bits)

    def offset(self, count: int) -> int:
        """C L: the encoding of zero for C summands (subtract it for the signed level)."""
        return int(count) * self.level

    def top(self, count: int) -> int:
        """2 C L: the largest encoding of C summands."""
        return 2 * int(count) * self.level

    def encoder(self, count: int = 1, *, weighted: bool = False,
                rounding_key: bytes | None = None) -> Encoder:
        """A stochastic-rounding encoder for values standing for ``count`` summands.

        ``weighted=True``: the inputs are single values x and the encoded value is
        ``count`` x (a client of integer weight ``count``), without a temporary array.
        """
        return Encoder(self, count, weighted, rounding_key)

    def dequantize(self, total: np.ndarray, count: int) -> np.ndarray:
        """(S - W L) s = S s - W c: the sum of the encoded values from the level sum S of W summands."""
        return np.asarray(total, dtype=np.float64) * self.step - self.clip * float(count)

    def values(self, signed: np.ndarray) -> np.ndarray:
        """Signed level sums (already minus W L) times the step."""
        return _times(np.asarray(signed), self.step)


class Encoder:
    """Encodes consecutive chunks of one vector on a :class:`Grid`; rounding bits continue across chunks.

    ``rounding_key`` keys the AES-CTR stream of rounding bits; None (the secure
    default) draws a fresh ``os.urandom`` key. A fixed key makes the rounding
    reproducible, which only a test or benchmark that re-derives the encoding needs.
    ``clipped`` counts the inputs clipped so far.
    """

    def __init__(self, grid: Grid, count: int, weighted: bool, rounding_key: bytes | None) -> None:
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise InvalidInputError(f"summand count must be an integer >= 0, got {count!r}")
        if rounding_key is not None and len(rounding_key) != 32:
            raise InvalidInputError("rounding_key must be 32 bytes")
        count = int(count)
        # weighted: clip x to [-c, c] and scale by C / s, i.e. clip C x to [-C c, C c]
        self.bound = grid.clip if weighted else count * grid.clip
        self.scale = (count if weighted else 1) * grid.level / grid.clip  # levels per unit of x
        self.half = float(grid.offset(count))
        self.rng = CtrStream(rounding_key or os.urandom(32))
        self.clipped = 0

    def encode_into(self, x: np.ndarray, out: np.ndarray) -> None:
        """out = q(x) for the next chunk x (float64; ``out`` any unsigned integer dtype).

        NaN or inf raises InvalidInputError.
        """
        bad, clipped = _encode(x, self.bound, self.scale, self.half, self.rng.words16(x.size), out)
        if bad:
            raise InvalidInputError("quantize needs finite values: the vector has NaN or inf")
        self.clipped += clipped


@njit(cache=True)
def _encode(x, bound, scale, half, rand16, out):
    """out[i] = C L + clamp(floor(clip(x_i) scale + r_i 2^-16), -C L, C L), half = C L.

    The signed form makes 0 encode to exactly C L; the loop has no data-dependent branch.
    Returns (how many inputs were NaN or infinite, how many were clipped).
    """
    bad = 0
    clipped = 0
    for i in range(x.shape[0]):
        xi = x[i]
        bad += not (abs(xi) < np.inf)
        clipped += abs(xi) > bound
        v = min(max(xi, -bound), bound)
        q = np.floor(v * scale + rand16[i] * _RANDOM_UNIT)
        out[i] = min(max(q, -half), half) + half
    return bad, clipped


@njit(cache=True)
def _times(signed, step):
    out = np.empty(signed.size, dtype=np.float64)
    for i in range(signed.size):
        out[i] = signed[i] * step
    return out
