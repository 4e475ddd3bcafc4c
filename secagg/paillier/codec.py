"""One fixed-point codec for a whole vector (phe-compatible, base 16).

A float x is encoded as the integer round(x * 16^(-exponent)) with one ``exponent``
shared by every value of a vector and fixed by the protocol, so no per-value exponent
travels in clear (phe stores one per number and leaks magnitudes; its caveats page
advises fixing it). Negative integers are represented mod n; integers in
(max_int, n - max_int) with max_int = n // 3 - 1 are phe's overflow band, decoded as an
error. Because base and convention match phe's ``EncodedNumber`` (value =
int_rep * 16^exponent), our ciphertexts convert to phe ``EncryptedNumber`` objects with
the same exponent and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import HeadroomExceededError, InvalidInputError

BASE = 16
_LOG2_BASE = 4


@dataclass(frozen=True)
class FixedPointCodec:
    """value = int_rep * 16^exponent, ``exponent`` <= 0 shared by the whole vector."""

    exponent: int = -8

    def __post_init__(self) -> None:
        if not isinstance(self.exponent, int | np.integer) or not -64 <= self.exponent <= 0:
            raise InvalidInputError(f"exponent must be an integer in [-64, 0], got {self.exponent!r}")

    @classmethod
    def from_precision(cls, precision: float) -> FixedPointCodec:
        """The exponent phe picks for ``precision=``: floor(log_16 precision)."""
        if not (np.isfinite(precision) and 0 < precision <= 1):
            raise InvalidInputError(f"precision must be in (0, 1], got {precision!r}")
        return cls(int(math.floor(math.log(precision, BASE))))

    @classmethod
    def from_bits(cls, bits: int) -> FixedPointCodec:
        """At least ``bits`` fractional bits: exponent = -ceil(bits / 4)."""
        return cls((-int(bits)) // _LOG2_BASE)

    @property
    def scale(self) -> int:
        return BASE ** (-self.exponent)

    @property
    def resolution(self) -> float:
        return float(BASE) ** self.exponent

    def encode(self, values: np.ndarray, max_int: int) -> list[int]:
        """Signed integers round(x * scale); raises on NaN/inf or |int| > max_int."""
        x = finite_1d(values)
        if x.size == 0:
            return []
        scaled = x * float(self.scale)
        biggest = float(np.max(np.abs(scaled)))
        if biggest < 2.0**62 and biggest <= max_int:
            return np.rint(scaled).astype(np.int64).tolist()
        scale = self.scale
        ints = [round(v * scale) if abs(v) < 2.0**52 else int(v) * scale for v in x.tolist()]
        worst = max(abs(v) for v in ints)
        if worst > max_int:
            raise HeadroomExceededError(
                f"value {worst / scale:.6g} does not fit the plaintext space with exponent "
                f"{self.exponent} (|x| * 16^{-self.exponent} must be <= n // 3 - 1)"
            )
        return ints

    def decode(self, ints: list[int]) -> np.ndarray:
        """Floats int_rep * 16^exponent (ints already signed)."""
        scale = self.scale
        if not ints:
            return np.zeros(0)
        if max(abs(min(ints)), abs(max(ints))) < 2**62:
            return np.asarray(ints, dtype=np.int64) / float(scale)
        return np.array([int(v) / scale for v in ints])


def finite_1d(values) -> np.ndarray:
    """``values`` as a contiguous 1-D float64 array, or InvalidInputError (NaN, inf, shape)."""
    try:
        x = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"values must be numeric: {exc}") from None
    if x.ndim != 1:
        raise InvalidInputError(f"expected a 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("values contain NaN or inf")
    return x
