"""Vector kernels: mask accumulation and bit-packing of Z_R vectors.

Vectors over Z_R with R = 2^r live in machine words (uint32 for r <= 32, else uint64)
and are added with wrap-around; reduction mod R is the final ``& (R - 1)``, which is a
ring homomorphism from Z_{2^32} (or Z_{2^64}) onto Z_R. Other moduli use explicit
modular addition (values < R <= 2^63, so a + b never overflows uint64).

On the wire a vector takes ceil(log2 R) bits per entry (Google fcp ``secagg_vector``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import MalformedMessageError


def is_pow2(modulus: int) -> bool:
    return modulus & (modulus - 1) == 0


def add_into(acc: np.ndarray, v: np.ndarray, modulus: int) -> None:
    """acc += v (mod R), in place."""
    if is_pow2(modulus):
        np.add(acc, v, out=acc)
    else:
        np.add(acc, v, out=acc)
        acc[acc >= modulus] -= acc.dtype.type(modulus)


def sub_into(acc: np.ndarray, v: np.ndarray, modulus: int) -> None:
    """acc -= v (mod R), in place."""
    if is_pow2(modulus):
        np.subtract(acc, v, out=acc)
    else:
        under = acc < v
        np.subtract(acc, v, out=acc)
        acc[under] += acc.dtype.type(modulus)


def reduce(acc: np.ndarray, modulus: int) -> np.ndarray:
    """Canonical representatives in [0, R)."""
    if is_pow2(modulus) and modulus < 1 << (8 * acc.dtype.itemsize):
        acc &= acc.dtype.type(modulus - 1)
    return acc


def bit_width(modulus: int) -> int:
    return (modulus - 1).bit_length()


@njit(cache=True)
def _pack(values, width, out):
    acc = np.uint64(0)
    nbits = 0
    pos = 0
    for i in range(values.shape[0]):
        acc |= np.uint64(values[i]) << np.uint64(nbits)
        nbits += width
        while nbits >= 8:
            out[pos] = np.uint8(acc & np.uint64(0xFF))
            acc >>= np.uint64(8)
            nbits -= 8
            pos += 1
    if nbits > 0:
        out[pos] = np.uint8(acc & np.uint64(0xFF))


@njit(cache=True)
def _unpack(data, width, count, out):
    acc = np.uint64(0)
    nbits = 0
    pos = 0
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    for i in range(count):
        while nbits < width:
            acc |= np.uint64(data[pos]) << np.uint64(nbits)
            nbits += 8
            pos += 1
        out[i] = acc & mask
        acc >>= np.uint64(width)
        nbits -= width
    return acc


def packed_size(length: int, modulus: int) -> int:
    return -(-length * _wire_width(modulus) // 8)


def _wire_width(modulus: int) -> int:
    w = bit_width(modulus)
    return w if w <= 56 else 64


@njit(cache=True)
def _pack32(values, width, out):
    """Pack values of <= 32 bits into little-endian uint32 words (out has enough words)."""
    acc = np.uint64(0)
    nbits = 0
    pos = 0
    for i in range(values.shape[0]):
        acc |= np.uint64(values[i]) << np.uint64(nbits)
        nbits += width
        if nbits >= 32:
            out[pos] = np.uint32(acc & np.uint64(0xFFFFFFFF))
            acc >>= np.uint64(32)
            nbits -= 32
            pos += 1
    if nbits > 0:
        out[pos] = np.uint32(acc & np.uint64(0xFFFFFFFF))


@njit(cache=True)
def _unpack32(words, width, count, out):
    acc = np.uint64(0)
    nbits = 0
    pos = 0
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    for i in range(count):
        if nbits < width:
            acc |= np.uint64(words[pos]) << np.uint64(nbits)
            nbits += 32
            pos += 1
        out[i] = acc & mask
        acc >>= np.uint64(width)
        nbits -= width
    return acc


def pack(values: np.ndarray, modulus: int) -> bytes:
    """Bit-pack values in [0, R) to ceil(log2 R) bits each (little-endian bit order)."""
    width = _wire_width(modulus)
    if width in (8, 16, 32, 64):
        return values.astype(f"<u{width // 8}", copy=False).tobytes()
    nbytes = packed_size(values.size, modulus)
    if width < 32:
        out = np.zeros(-(-nbytes // 4), dtype="<u4")
        _pack32(values, width, out)
        return out.tobytes()[:nbytes]
    out = np.zeros(nbytes, dtype=np.uint8)
    _pack(values, width, out)
    return out.tobytes()


def unpack(data: bytes, length: int, modulus: int, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`pack`; checks the size, padding bits and that values are < R."""
    width = _wire_width(modulus)
    if len(data) != packed_size(length, modulus):
        raise MalformedMessageError(
            f"packed vector has {len(data)} bytes, expected {packed_size(length, modulus)}"
        )
    if width in (8, 16, 32, 64):
        vals = np.frombuffer(data, dtype=f"<u{width // 8}").astype(dtype)
    else:
        vals = np.empty(length, dtype=np.uint64)
        if width < 32:
            words = np.frombuffer(data + bytes(-len(data) % 4), dtype="<u4")
            rest = _unpack32(words, width, length, vals)
            tail = len(data) % 4
            if tail and words[-1] >> np.uint32(8 * tail):
                raise MalformedMessageError("packed vector has non-zero padding bytes")
        else:
            rest = _unpack(np.frombuffer(data, dtype=np.uint8), width, length, vals)
        if rest != 0:
            raise MalformedMessageError("packed vector has non-zero padding bits")
        vals = vals.astype(dtype, copy=False)
    if vals.size and int(vals.max()) >= modulus:
        raise MalformedMessageError("packed vector holds a value >= modulus")
    return vals
