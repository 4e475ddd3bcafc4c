"""AES-256-CTR keystreams from ``cryptography``: the CSPRNG of masks and of stochastic rounding.

Keystream block i (i = 0, 1, ...) of a 256-bit key K is E_K(0^96 || [i + 2]_32): the
counter blocks AES-GCM runs for a 96-bit zero nonce, so OpenSSL's AES-GCM engine (VAES /
AVX-512 where the CPU has it, about twice as fast as its plain CTR mode) produces the
keystream as the ciphertext of zeros; the tag is discarded. The output is bit for bit
the CTR keystream (tested against ``modes.CTR``). Each key encrypts one stream, so the
fixed nonce is never reused under a key. A stream is at most 2^32 - 2 blocks (64 GiB;
the 32-bit counter never wraps, longer requests raise), and q blocks of one key are
distinguishable from uniform with advantage at most q^2 / 2^129 (PRP/PRF switching).

Keyed from ``os.urandom`` a stream is a CSPRNG (never numpy's generators).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import InvalidInputError

KEY_BYTES = 32  #: AES-256
_NONCE = bytes(12)

#: The longest keystream one key yields: 2^32 - 2 blocks (the GCM counter is 32 bits).
PRG_MAX_BYTES = ((1 << 32) - 2) * 16


def prg_cipher(key: bytes):
    """An encryptor whose output for zero input is the AES-CTR keystream of ``key``.

    Read it with ``update_into(zeros, out)``, ``out`` at least 15 bytes longer than the
    input; callers keep the total under :data:`PRG_MAX_BYTES` (:func:`check_prg_length`).
    """
    if len(key) != KEY_BYTES:
        raise InvalidInputError(f"PRG key must be {KEY_BYTES} bytes (AES-256), got {len(key)}")
    return Cipher(algorithms.AES(key), modes.GCM(_NONCE)).encryptor()


def check_prg_length(nbytes: int) -> None:
    """Refuse a keystream longer than one key can give without its counter wrapping."""
    if nbytes > PRG_MAX_BYTES:
        raise InvalidInputError(
            f"a keystream of {nbytes} bytes exceeds the PRG limit of {PRG_MAX_BYTES} bytes per key "
            "(2^32 - 2 AES blocks); split the vector into several named vectors"
        )


def keystream(key: bytes, nbytes: int) -> np.ndarray:
    """``nbytes`` of the AES-CTR keystream of ``key`` (see :func:`prg_cipher`) as uint8."""
    check_prg_length(nbytes)
    out = np.empty(nbytes + 16, dtype=np.uint8)
    n = prg_cipher(key).update_into(zero_bytes(nbytes), out)
    return out[:n]


_ZERO_CACHE: dict[int, bytes] = {}


def zero_bytes(nbytes: int) -> bytes:
    """``nbytes`` zero bytes, the plaintext a keystream is read from (a few sizes cached)."""
    buf = _ZERO_CACHE.get(nbytes)
    if buf is None:
        if len(_ZERO_CACHE) > 8:
            _ZERO_CACHE.clear()
        buf = _ZERO_CACHE[nbytes] = bytes(nbytes)
    return buf


class CtrStream:
    """A continuing AES-CTR keystream (:func:`prg_cipher`) read in pieces into one buffer."""

    def __init__(self, key: bytes) -> None:
        self._enc = prg_cipher(key)
        self._buf = np.empty(0, dtype=np.uint8)
        self._read = 0

    def words16(self, n: int) -> np.ndarray:
        """The next n keystream words as uint16 (a view, valid until the next call)."""
        self._read += 2 * n
        check_prg_length(self._read)
        if self._buf.size < 2 * n + 16:
            self._buf = np.empty(2 * n + 16, dtype=np.uint8)
        self._enc.update_into(zero_bytes(2 * n), self._buf)
        return self._buf[:2 * n].view(np.uint16)
