"""Wire format of the SecAgg / SecAgg+ messages: versioned, length-checked bytes.

Every message is ``b"SA" || version (1 B) || type (1 B) || body``; integers are
big-endian, lists carry a u32 count that is checked against the bytes that remain
before anything is allocated, and trailing bytes are an error. No pickle: any transport
that moves bytes can carry these messages. All parse failures raise
:class:`~secagg.errors.MalformedMessageError` naming the field.

Message flow (Bonawitz et al. 2017, Fig. 4; round numbers as in the paper):

====  =====================  ==============================================
round server -> client        client -> server
====  =====================  ==============================================
0     RoundConfig            AdvertiseKeys
1     KeyList                EncryptedShares
2     ForwardedShares        MaskedInput
3     ConsistencyRequest     ConsistencySignature  (active variant only)
4     UnmaskRequest          UnmaskResponse
====  =====================  ==============================================
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import MalformedMessageError
from ..wire import Reader
from .primitives import COMMIT_BYTES, KEY_BYTES, LABEL_CONSISTENCY, SIG_BYTES
from .shamir import SHARE_BYTES

MAGIC = b"SA"
#: 2: the mask PRG became AES-256-CTR from counter block 2 (v1 masks differ);
#: 3: AdvertiseKeys carries the self-mask seed commitment, RoundConfig the corrupt bound
VERSION = 3
MAX_CLIENT_ID = (1 << 32) - 1

T_CONFIG, T_ADVERTISE, T_KEYLIST, T_SHARES, T_FORWARD, T_MASKED = 1, 2, 3, 4, 5, 6
T_CONSIST_REQ, T_CONSIST_SIG, T_UNMASK_REQ, T_UNMASK_RESP = 7, 8, 9, 10

#: kinds of share in an UnmaskResponse
SHARE_SELF_SEED = 0  #: share of b_u (owner survived)
SHARE_MASK_KEY = 1  #: share of s_u^SK (owner dropped after sharing keys)




def _header(mtype: int) -> bytes:
    return MAGIC + bytes([VERSION, mtype])


def _open(data: bytes, mtype: int, what: str) -> Reader:
    r = Reader(data, what)
    magic = r.take(2, "magic")
    if magic != MAGIC:
        raise MalformedMessageError(f"{what}: bad magic {magic!r} (not a SecAgg message)")
    version = r.u8("version")
    if version != VERSION:
        raise MalformedMessageError(f"{what}: unsupported version {version} (expected {VERSION})")
    got = r.u8("type")
    if got != mtype:
        raise MalformedMessageError(f"{what}: message type {got} where type {mtype} was expected")
    return r


def message_type(data: bytes) -> int:
    """The type byte of a message (after checking magic and version)."""
    r = Reader(data, "message")
    if r.take(2, "magic") != MAGIC:
        raise MalformedMessageError("bad magic: not a SecAgg message")
    if r.u8("version") != VERSION:
        raise MalformedMessageError("unsupported message version")
    return r.u8("type")


def _ids(ids) -> bytes:
    ids = list(ids)
    for c in ids:
        if not 0 <= c <= MAX_CLIENT_ID:
            raise MalformedMessageError(f"client id {c} does not fit in 32 bits")
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


def _blob(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


# --------------------------------------------------------------------------- round 0
@dataclass(frozen=True)
class RoundConfig:
    """Server -> all clients: the parameters of one aggregation round.

    ``nonce`` is fresh per round, so the config (and the session id that hashes it)
    never repeats; ``active`` selects the variant with signatures and ConsistencyCheck.
    ``corrupt`` is the declared bound C on corrupt clients among ``clients``, from which
    every party derives the corrupt-neighbour bound the threshold must beat
    (graph.check_threshold); an active-variant client never trusts it below its own.
    """

    round_id: int
    nonce: bytes
    clients: list[int]
    vector: str
    length: int
    modulus: int
    k: int
    t: int
    active: bool = False
    corrupt: int = 0

    def to_bytes(self) -> bytes:
        name = self.vector.encode()
        return b"".join([
            _header(T_CONFIG), struct.pack(">Q", self.round_id), _blob(self.nonce),
            _ids(self.clients), _blob(name), struct.pack(">Q", self.length),
            self.modulus.to_bytes(9, "big"),
            struct.pack(">IIBI", self.k, self.t, int(self.active), self.corrupt),
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundConfig:
        r = _open(data, T_CONFIG, "RoundConfig")
        round_id = r.u64("round_id")
        nonce = r.blob("nonce")
        clients = r.ids("clients")
        try:
            vector = r.blob("vector").decode()
        except UnicodeDecodeError:
            raise MalformedMessageError("RoundConfig: vector name is not UTF-8") from None
        length = r.u64("length")
        modulus = int.from_bytes(r.take(9, "modulus"), "big")
        k, t = r.u32("k"), r.u32("t")
        active = r.u8("active")
        corrupt = r.u32("corrupt")
        r.done()
        if active > 1:
            raise MalformedMessageError("RoundConfig: active flag must be 0 or 1")
        return cls(round_id, nonce, clients, vector, length, modulus, k, t, bool(active), corrupt)

    def digest(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()


@dataclass(slots=True)
class AdvertiseKeys:
    """Client -> server: its two X25519 public keys (c for shares, s for masks) and the
    commitment to its self-mask seed (primitives.seed_commitment).

    ``signature`` (active variant): Ed25519 over config digest || id || c_pk || s_pk || commitment.
    """

    config_digest: bytes
    sender: int
    c_pk: bytes
    s_pk: bytes
    seed_commit: bytes
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return (self.config_digest + struct.pack(">I", self.sender) + self.c_pk + self.s_pk
                + self.seed_commit)

    def entry(self) -> bytes:
        return (struct.pack(">I", self.sender) + self.c_pk + self.s_pk + self.seed_commit
                + _blob(self.signature))

    def to_bytes(self) -> bytes:
        return _header(T_ADVERTISE) + self.config_digest + self.entry()

    @classmethod
    def read_entry(cls, r: Reader, digest: bytes) -> AdvertiseKeys:
        sender = r.u32("sender")
        c_pk, s_pk = r.take(KEY_BYTES, "c_pk"), r.take(KEY_BYTES, "s_pk")
        commit = r.take(COMMIT_BYTES, "seed_commit")
        sig = r.blob("signature")
        if len(sig) not in (0, SIG_BYTES):
            raise MalformedMessageError(f"AdvertiseKeys: signature of {len(sig)} bytes")
        return cls(digest, sender, c_pk, s_pk, commit, sig)

    @classmethod
    def from_bytes(cls, data: bytes) -> AdvertiseKeys:
        r = _open(data, T_ADVERTISE, "AdvertiseKeys")
        digest = r.take(32, "config_digest")
        msg = cls.read_entry(r, digest)
        r.done()
        return msg


# --------------------------------------------------------------------------- round 1
ENTRY_BYTES = 4 + 2 * KEY_BYTES + COMMIT_BYTES  #: a KeyList entry without its signature


class KeyList:
    """Server -> clients: every advertised key (U1), sorted by id; the same bytes for all.

    Entries have a fixed size (id || c_pk || s_pk || seed commitment || signature of
    ``sig_len`` bytes, 0 or 64) and stay in one byte string: a client parses only the entries it uses
    (its neighbours), so reading a list of n keys costs O(n) bytes, not O(n) objects.
    """

    def __init__(self, config_digest: bytes, entries: list[AdvertiseKeys] | None = None, *,
                 raw: bytes | None = None, sig_len: int = 0) -> None:
        self.config_digest = config_digest
        if entries is not None:
            lens = {len(e.signature) for e in entries}
            if len(lens) > 1:
                raise MalformedMessageError("KeyList: entries mix signed and unsigned keys")
            sig_len = lens.pop() if lens else 0
            raw = b"".join(struct.pack(">I", e.sender) + e.c_pk + e.s_pk + e.seed_commit + e.signature
                           for e in entries)
        self.sig_len = sig_len
        self.size = ENTRY_BYTES + sig_len
        self.raw = raw
        table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, self.size)
        self.ids = table[:, :4].copy().view(">u4").ravel().astype(np.int64)
        self._table = table

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, KeyList) and other.config_digest == self.config_digest
                and other.raw == self.raw)

    def __len__(self) -> int:
        return self.ids.size

    def key_bytes(self) -> bytes:
        """The entries as hashed into the session id."""
        return self.raw

    def entry(self, client: int) -> AdvertiseKeys | None:
        """The keys advertised by ``client`` (None if absent)."""
        i = int(np.searchsorted(self.ids, client))
        if i >= self.ids.size or self.ids[i] != client:
            return None
        o = i * self.size
        k1, k2, k3 = o + 4 + KEY_BYTES, o + 4 + 2 * KEY_BYTES, o + ENTRY_BYTES
        return AdvertiseKeys(self.config_digest, client, self.raw[o + 4:k1], self.raw[k1:k2],
                             self.raw[k2:k3], self.raw[k3:o + self.size])

    @property
    def entries(self) -> list[AdvertiseKeys]:
        return [self.entry(int(c)) for c in self.ids]

    def keys_unique(self) -> bool:
        """True when all 2n advertised public keys are distinct."""
        keys = np.concatenate([self._table[:, 4:4 + KEY_BYTES], self._table[:, 4 + KEY_BYTES:4 + 2 * KEY_BYTES]])
        return np.unique(np.ascontiguousarray(keys).view(f"V{KEY_BYTES}")).size == keys.shape[0]

    def to_bytes(self) -> bytes:
        return (_header(T_KEYLIST) + self.config_digest
                + struct.pack(">BI", self.sig_len, len(self)) + self.raw)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyList:
        r = _open(data, T_KEYLIST, "KeyList")
        digest = r.take(32, "config_digest")
        sig_len = r.u8("sig_len")
        if sig_len not in (0, SIG_BYTES):
            raise MalformedMessageError(f"KeyList: signature length {sig_len}")
        size = ENTRY_BYTES + sig_len
        n = r.count("entries", size)
        raw = r.take(n * size, "entries")
        r.done()
        out = cls(digest, raw=raw, sig_len=sig_len)
        if np.any(np.diff(out.ids) <= 0):
            raise MalformedMessageError("KeyList: entries must be sorted by distinct client id")
        return out


@dataclass(frozen=True)
class _Addressed:
    """A list of (peer id, opaque bytes) sent by or to one client in a session."""

    session: bytes
    client: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    TYPE = 0
    NAME = ""

    def to_bytes(self) -> bytes:
        parts = [_header(self.TYPE), self.session, struct.pack(">II", self.client, len(self.items))]
        for peer, blob in self.items:
            parts.append(struct.pack(">I", peer) + _blob(blob))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes):
        r = _open(data, cls.TYPE, cls.NAME)
        session = r.take(32, "session")
        client = r.u32("client")
        n = r.count("items", 8)
        items = [(r.u32("peer"), r.blob("ciphertext")) for _ in range(n)]
        r.done()
        if len({p for p, _ in items}) != n:
            raise MalformedMessageError(f"{cls.NAME}: duplicate peer id")
        return cls(session, client, items)


class EncryptedShares(_Addressed):
    """Client -> server: AE ciphertext of (u, v, share of b_u, share of s_u^SK) per v."""

    TYPE = T_SHARES
    NAME = "EncryptedShares"


class ForwardedShares(_Addressed):
    """Server -> client v: the ciphertexts addressed to v, with their senders (= U2 ∩ N(v))."""

    TYPE = T_FORWARD
    NAME = "ForwardedShares"


# --------------------------------------------------------------------------- round 2
@dataclass(frozen=True)
class MaskedInput:
    """Client -> server: y_u bit-packed to ceil(log2 R) bits per entry."""

    session: bytes
    sender: int
    length: int
    modulus: int
    packed: bytes | memoryview

    @staticmethod
    def prefix(session: bytes, sender: int, length: int, modulus: int, packed_len: int) -> bytes:
        """Everything before the packed vector (lets a client pack straight into the message)."""
        return b"".join([_header(T_MASKED), session, struct.pack(">IQ", sender, length),
                         modulus.to_bytes(9, "big"), struct.pack(">I", packed_len)])

    def to_bytes(self) -> bytes:
        head = self.prefix(self.session, self.sender, self.length, self.modulus, len(self.packed))
        return head + bytes(self.packed)

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedInput:
        r = _open(data, T_MASKED, "MaskedInput")
        session = r.take(32, "session")
        sender, length = r.u32("sender"), r.u64("length")
        modulus = int.from_bytes(r.take(9, "modulus"), "big")
        packed = r.blob_view("packed")
        r.done()
        return cls(session, sender, length, modulus, packed)


# --------------------------------------------------------------------------- rounds 3-4
def consistency_bytes(session: bytes, survivors: list[int]) -> bytes:
    """What each client signs in ConsistencyCheck: session id || sorted U3."""
    return LABEL_CONSISTENCY + session + _ids(sorted(survivors))


@dataclass(frozen=True)
class ConsistencyRequest:
    """Server -> clients (active variant): the survivor set U3 to sign."""

    session: bytes
    survivors: list[int]

    def to_bytes(self) -> bytes:
        return _header(T_CONSIST_REQ) + self.session + _ids(self.survivors)

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyRequest:
        r = _open(data, T_CONSIST_REQ, "ConsistencyRequest")
        session = r.take(32, "session")
        survivors = r.ids("survivors")
        r.done()
        return cls(session, survivors)


@dataclass(frozen=True)
class ConsistencySignature:
    session: bytes
    sender: int
    signature: bytes

    def to_bytes(self) -> bytes:
        return _header(T_CONSIST_SIG) + self.session + struct.pack(">I", self.sender) + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencySignature:
        r = _open(data, T_CONSIST_SIG, "ConsistencySignature")
        session = r.take(32, "session")
        sender = r.u32("sender")
        sig = r.take(SIG_BYTES, "signature")
        r.done()
        return cls(session, sender, sig)


@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> clients: U3 (and, active variant, the signatures collected on it)."""

    session: bytes
    survivors: list[int]
    signatures: list[tuple[int, bytes]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        parts = [_header(T_UNMASK_REQ), self.session, _ids(self.survivors),
                 struct.pack(">I", len(self.signatures))]
        parts += [struct.pack(">I", c) + s for c, s in self.signatures]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskRequest:
        r = _open(data, T_UNMASK_REQ, "UnmaskRequest")
        session = r.take(32, "session")
        survivors = r.ids("survivors")
        n = r.count("signatures", 4 + SIG_BYTES)
        sigs = [(r.u32("signer"), r.take(SIG_BYTES, "signature")) for _ in range(n)]
        r.done()
        return cls(session, survivors, sigs)


@dataclass(frozen=True)
class UnmaskResponse:
    """Client -> server: one share per neighbour: of b_v if v in U3, of s_v^SK otherwise."""

    session: bytes
    sender: int
    shares: list[tuple[int, int, bytes]]  #: (owner, kind, share)

    def to_bytes(self) -> bytes:
        parts = [_header(T_UNMASK_RESP), self.session, struct.pack(">II", self.sender, len(self.shares))]
        parts += [struct.pack(">IB", o, k) + s for o, k, s in self.shares]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskResponse:
        r = _open(data, T_UNMASK_RESP, "UnmaskResponse")
        session = r.take(32, "session")
        sender = r.u32("sender")
        n = r.count("shares", 5 + SHARE_BYTES)
        shares = []
        for _ in range(n):
            owner, kind = r.u32("owner"), r.u8("kind")
            if kind not in (SHARE_SELF_SEED, SHARE_MASK_KEY):
                raise MalformedMessageError(f"UnmaskResponse: unknown share kind {kind}")
            shares.append((owner, kind, r.take(SHARE_BYTES, "share")))
        r.done()
        if len({o for o, _, _ in shares}) != n:
            raise MalformedMessageError("UnmaskResponse: two shares for the same owner")
        return cls(session, sender, shares)


# --------------------------------------------------------------------------- share plaintext
def share_plaintext(sender: int, recipient: int, seed_share: bytes, key_share: bytes) -> bytes:
    return struct.pack(">II", sender, recipient) + seed_share + key_share


def parse_share_plaintext(data: bytes) -> tuple[int, int, bytes, bytes]:
    if len(data) != 8 + 2 * SHARE_BYTES:
        raise MalformedMessageError(f"share plaintext has {len(data)} bytes")
    sender, recipient = struct.unpack(">II", data[:8])
    return sender, recipient, data[8:8 + SHARE_BYTES], data[8 + SHARE_BYTES:]


def share_aad(session: bytes, sender: int, recipient: int) -> bytes:
    return session + struct.pack(">II", sender, recipient)
