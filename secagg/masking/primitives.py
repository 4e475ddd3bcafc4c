"""Cryptographic primitives of pairwise-mask secure aggregation, all from ``cryptography``.

Bonawitz et al. (CCS 2017, section 3) need four primitives; we instantiate them as:

* key agreement KA: X25519 (raw 32-byte keys); the shared secret goes through
  HKDF-SHA256 with a distinct ``info`` label per purpose (share encryption, pairwise
  mask), salted with the session id so keys never repeat across sessions;
* authenticated encryption AE for the Shamir shares: AES-256-GCM, random 96-bit nonce,
  associated data = session id || sender || recipient;
* PRG for masks: AES-256-CTR under a 256-bit key derived by HKDF from the seed and
  (session id, round, pair or owner, vector name, length, modulus), so no two masks
  ever share a key stream (the key size of Google's fcp). The keystream is read through
  OpenSSL's AES-GCM engine with a zero nonce (:mod:`secagg.keystream`, shared with the
  stochastic rounding of :mod:`secagg.quantize`); where the CPU has VAES that engine is
  about twice as fast as plain CTR mode (the ``prg`` figures of
  ``bench/secagg_vs_flower.py`` measure both), and its output is bit for bit the CTR
  keystream (tested against ``modes.CTR``). A stream is at most 2^32 - 2 blocks, and q
  blocks of one key are distinguishable from uniform with advantage at most
  q^2 / 2^129 (PRP/PRF switching), under 2^-65;
* signatures (active-adversary variant only): Ed25519.

Uniform sampling modulo M (2 <= M <= 2^64): raw keystream bits when M is a power of
two, otherwise rejection sampling on ceil(log2 M)-bit words (expected < 2 words per
output; the rejected-word count is bounded by the keystream, never by a counter wrap).
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import InvalidInputError, KeyMismatchError, MalformedMessageError
from ..keystream import check_prg_length, keystream, prg_cipher
from ..keystream import zero_bytes as _zeros
from .vectors import add_difference

KEY_BYTES = 32
MASK_KEY_BYTES = 32  #: AES-256 keys for the mask PRG (see the module docstring)
NONCE_BYTES = 12
TAG_BYTES = 16
SIG_BYTES = 64

#: HKDF ``info`` labels: one per purpose (domain separation).
LABEL_SHARE_KEY = b"secagg/v1/share-encryption-key"
LABEL_PAIR_MASK = b"secagg/v1/pairwise-mask"
LABEL_SELF_MASK = b"secagg/v1/self-mask"
LABEL_SESSION = b"secagg/v1/session-id"
LABEL_PERMUTATION = b"secagg/v1/graph-relabelling"
LABEL_CONSISTENCY = b"secagg/v1/consistency-signature"
LABEL_SEED_COMMIT = b"secagg/v1/self-mask-seed-commitment"
COMMIT_BYTES = 32


def hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869) from ``cryptography``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


# --------------------------------------------------------------------------- key agreement
def x25519_keypair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair as (private key object, raw public 32 B)."""
    sk = X25519PrivateKey.generate()
    return sk, sk.public_key().public_bytes_raw()


def x25519_private(raw: bytes) -> X25519PrivateKey:
    """Load a raw 32-byte X25519 private key (e.g. one reconstructed from shares)."""
    return X25519PrivateKey.from_private_bytes(raw)


def x25519_raw(private: X25519PrivateKey) -> bytes:
    return private.private_bytes_raw()


def x25519_public(private: X25519PrivateKey) -> bytes:
    """Raw public key of a private key (used to check reconstructed keys)."""
    return private.public_key().public_bytes_raw()


def x25519_shared(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """Raw X25519 shared secret; raises KeyMismatchError on a low-order peer key."""
    if len(peer_public) != KEY_BYTES:
        raise MalformedMessageError(f"X25519 public key must be 32 bytes, got {len(peer_public)}")
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # all-zero shared secret (small-order point)
        raise KeyMismatchError(f"X25519 key agreement failed: {exc}") from None


def share_key(shared: bytes, session_id: bytes) -> bytes:
    """AES-256-GCM key for the share ciphertexts between two clients."""
    return hkdf(shared, salt=session_id, info=LABEL_SHARE_KEY)


# --------------------------------------------------------------------------- AEAD
def aead_encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: nonce (12 B) || ciphertext || tag (16 B)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`; tampering raises MalformedMessageError."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise MalformedMessageError(f"ciphertext too short ({len(blob)} bytes)")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise MalformedMessageError(
            "share ciphertext failed authentication (tampered, wrong key or wrong session)"
        ) from None


# --------------------------------------------------------------------------- signatures
def ed25519_keypair() -> tuple[bytes, bytes]:
    """Long-term identity key pair (raw private, raw public) for the active variant."""
    sk = Ed25519PrivateKey.generate()
    return sk.private_bytes_raw(), sk.public_key().public_bytes_raw()


def ed25519_sign(private: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private).sign(message)


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message``."""
    if len(signature) != SIG_BYTES or len(public) != KEY_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- session id
def session_id(config_bytes: bytes, key_entries: bytes) -> bytes:
    """SHA-256 over the round configuration and every advertised key (length-prefixed).

    Binds all public keys of the session (as Google fcp's compute_session_id does), so
    a key list swapped or replayed from another session yields a different id and every
    derived key, nonce and mask changes.
    """
    h = hashlib.sha256(LABEL_SESSION)
    for part in (config_bytes, key_entries):
        h.update(struct.pack(">Q", len(part)))
        h.update(part)
    return h.digest()


def seed_commitment(config_digest: bytes, owner: int, seed: bytes) -> bytes:
    """SHA-256(label || config digest || owner || b_u): a client's commitment to its self-mask seed.

    Advertised with its keys (so hashed into the session id, and signed in the active
    variant); the server accepts a reconstructed b_u only if it matches, so wrong shares
    can never unmask a wrong sum. Binding by SHA-256 collision resistance; hiding
    because b_u is 256 uniform bits (random-oracle model). The config digest (fresh
    nonce per round) stands in for the session id, which is not known yet when keys are
    advertised.
    """
    return hashlib.sha256(LABEL_SEED_COMMIT + config_digest + struct.pack(">I", owner) + seed).digest()


# --------------------------------------------------------------------------- PRG
def word_dtype(modulus: int) -> np.dtype:
    """uint32 for moduli <= 2^32, else uint64: the machine word masks are computed in."""
    return np.dtype(np.uint32) if modulus <= 1 << 32 else np.dtype(np.uint64)


def check_modulus(modulus: int) -> int:
    """A protocol modulus: a power of two 2 <= M <= 2^64, or any 2 <= M <= 2^63."""
    if not isinstance(modulus, int | np.integer) or isinstance(modulus, bool):
        raise InvalidInputError(f"modulus must be an integer, got {modulus!r}")
    modulus = int(modulus)
    pow2 = modulus & (modulus - 1) == 0
    if modulus < 2 or modulus > (1 << 64 if pow2 else 1 << 63):
        raise InvalidInputError(
            f"modulus must be a power of two in [2, 2^64] or an integer in [2, 2^63], got {modulus}"
        )
    return modulus


def mask_key(seed: bytes, *, label: bytes, session: bytes, round_id: int, party: tuple[int, int],
             vector: str, length: int, modulus: int) -> bytes:
    """AES-256 key of one mask: HKDF(seed, salt=session id, info=label||round||pair||vector||len||M).

    ``party`` is (min id, max id) for a pairwise mask and (owner, owner) for a self mask.
    """
    name = vector.encode()
    info = b"".join([
        label,
        struct.pack(">QII", round_id, party[0], party[1]),
        struct.pack(">H", len(name)), name,
        struct.pack(">Q", length), modulus.to_bytes(9, "big"),
    ])
    return hkdf(seed, salt=session, info=info, length=MASK_KEY_BYTES)


def uniform_mod(key: bytes, length: int, modulus: int) -> np.ndarray:
    """``length`` values uniform in [0, M) from the AES-CTR stream of ``key``.

    Powers of two take raw bits (masked words); other moduli reject words >= M among
    ceil(log2 M)-bit samples. Returns uint32 for M <= 2^32, else uint64.
    """
    modulus = check_modulus(modulus)
    dtype = word_dtype(modulus)
    width = dtype.itemsize
    if modulus & (modulus - 1) == 0:
        words = keystream(key, length * width).view(dtype)
        if modulus != 1 << (8 * width):
            words &= dtype.type(modulus - 1)
        return words
    bitmask = dtype.type((1 << (modulus - 1).bit_length()) - 1)
    # acceptance probability > 1/2; draw in growing batches from one continuous stream
    enc = prg_cipher(key)
    out = np.empty(length, dtype=dtype)
    filled, drawn = 0, 0
    while filled < length:
        need = length - filled
        batch = max(2 * need + 64, 1024)
        drawn += batch * width
        check_prg_length(drawn)
        words = np.frombuffer(enc.update(_zeros(batch * width)), dtype=dtype) & bitmask
        good = words[words < modulus][:need]
        out[filled:filled + good.size] = good
        filled += good.size
    return out


class MaskStream:
    """The running sum  sum_i signs[i] PRG(keys[i])  of several masks, read in pieces.

    Each key keeps an open AES-CTR context; :meth:`add_to` adds the next ``len(part)``
    words of every mask to ``part`` in place (wrap-around in its dtype, i.e. mod 2^32
    or 2^64, hence mod any R = 2^r after the final reduction). Walking a vector in
    cache-sized chunks adds all masks to a chunk while it sits in cache, and no mask is
    ever materialised in full. Masks of opposite sign are added in pairs,
    part += PRG(k+) - PRG(k-), in one pass. Equivalent to adding the full keystreams.
    """

    def __init__(self, keys: list[bytes], signs: list[int], dtype: np.dtype) -> None:
        if len(keys) != len(signs):
            raise InvalidInputError("one sign per key")
        ctxs = [prg_cipher(k) for k in keys]
        plus = [c for c, s in zip(ctxs, signs) if s > 0]
        minus = [c for c, s in zip(ctxs, signs) if s <= 0]
        pairs = min(len(plus), len(minus))
        self._pairs = list(zip(plus[:pairs], minus[:pairs]))
        self._single = [(c, np.add) for c in plus[pairs:]] + [(c, np.subtract) for c in minus[pairs:]]
        self._dtype = np.dtype(dtype)
        self._bufs = np.empty((2, 0), dtype=np.uint8)
        self._read = 0

    def add_to(self, part: np.ndarray) -> None:
        nbytes = part.size * self._dtype.itemsize
        self._read += nbytes
        check_prg_length(self._read)
        if self._bufs.shape[1] < nbytes + 16:
            self._bufs = np.empty((2, nbytes + 16), dtype=np.uint8)
        first, second = self._bufs
        a, b = first[:nbytes].view(self._dtype), second[:nbytes].view(self._dtype)
        zeros = _zeros(nbytes)
        for plus, minus in self._pairs:
            plus.update_into(zeros, first)
            minus.update_into(zeros, second)
            add_difference(part, a, b)
        for ctx, op in self._single:
            ctx.update_into(zeros, first)
            op(part, a, out=part)


def add_keystreams(acc: np.ndarray, keys: list[bytes], signs: list[int], *,
                   chunk_words: int = 1 << 15) -> None:
    """acc += sum_i signs[i] PRG(keys[i]) as raw machine words (R = 2^r), chunk by chunk."""
    stream = MaskStream(keys, signs, acc.dtype)
    for start in range(0, acc.size, chunk_words):
        stream.add_to(acc[start:start + chunk_words])


def random_seed() -> bytes:
    """32 fresh bytes from the OS CSPRNG (self-mask seeds, nonces)."""
    return os.urandom(KEY_BYTES)
