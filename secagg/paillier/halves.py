"""Packed Paillier split in two (:mod:`secagg.split`): what a client runs, what the server runs.

FedMF's setting (Chai et al. 2019, §5): every client holds the same key pair, the server
holds the public key only. One dense round, unit weights:

1. ``upload`` (server -> client): the round's public plan: the packing layout (clip,
   precision bits, headroom = the number of clients), the vector length and the public
   key's fingerprint. The client checks the fingerprint against its key, quantizes, packs
   and encrypts its vector (:meth:`PackedEncryptedVector.encrypt`, one summand) and
   replies with the serialized ciphertexts (``include_key=False``).
2. The server parses each reply against its public key, stating itself that it holds one
   summand (never read from the upload), and multiplies the ciphertexts (homomorphic
   sum); membership in Z*_{n^2} is checked once on the product.
3. ``download`` (server -> client): the included clients' ids and the aggregate
   ciphertexts. The client decrypts (the packed count is checked against the number of
   included clients) and keeps the sum in :attr:`PackedPaillierDevice.aggregate`; it
   sends nothing back.

The server never decrypts: :meth:`PackedPaillierServer.result` has ``aggregate=None``.
A transport that needs the sum in clear (a server-side model step) cannot use this
backend; FedMF instead has the clients apply the public update rule to their copy of
the item matrix (:mod:`secagg.paillier.backend`, who holds what). Wire: big-endian
header ``PP 1 || kind`` then the fields below; everything is bytes, no pickle.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from ..backend import apply_range
from ..errors import InvalidInputError, MalformedMessageError, ProtocolError, TooFewInputsError
from ..split import DeviceHalf, ServerHalf, SplitResult
from ..wire import Reader
from .keys import PrivateKey, PublicKey
from .obfuscation import CRTObfuscator
from .packing import PackingLayout, choose_layout
from .serialization import check_group_membership, vector_from_bytes
from .vector import PackedEncryptedVector

_MAGIC = b"PP\x01"
_UPLOAD, _DOWNLOAD = 1, 2
_PLAN = ">IdBII"  # client id, clip, precision bits, max summands, length


class PackedPaillierDevice(DeviceHalf):
    """One client: encrypts its vector under the shared key, decrypts the aggregate."""

    def __init__(self, key: PrivateKey, client_id: int, *, clip: float = 1.0,
                 out_of_range: str = "raise") -> None:
        if not isinstance(key, PrivateKey):
            raise InvalidInputError(f"the device half needs the clients' PrivateKey, got {type(key).__name__}")
        self.key, self.client_id = key, int(client_id)
        self.clip, self.out_of_range = float(clip), out_of_range
        self.x: np.ndarray | None = None
        #: the decrypted sum over the included clients, after the download message
        self.aggregate: np.ndarray | None = None
        self.included: list[int] = []
        self.clipped = 0

    def needs_input(self, message: bytes) -> bool:
        return bytes(message[:4]) == _MAGIC + bytes([_UPLOAD])

    def set_input(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or not np.all(np.isfinite(x)):
            raise InvalidInputError(f"client {self.client_id}: the input must be a finite 1-d vector")
        self.x, self.clipped = apply_range(x, self.clip, self.out_of_range, self.client_id)

    def handle(self, message: bytes) -> bytes | None:
        r = Reader(bytes(message), "packed-Paillier message")
        if r.take(3, "magic") != _MAGIC:
            raise MalformedMessageError("not a packed-Paillier message")
        kind = r.u8("kind")
        if kind == _UPLOAD:
            return self._upload(r)
        if kind == _DOWNLOAD:
            self._download(r)
            return None
        raise MalformedMessageError(f"packed-Paillier message of unknown kind {kind}")

    def _upload(self, r: Reader) -> bytes:
        client, clip, bits, max_summands, length = r.unpack(_PLAN, "plan")
        _check_key(r.take(32, "key fingerprint"), self.key.public_key)
        r.done()
        if client != self.client_id:
            raise ProtocolError(f"packed-Paillier device {self.client_id}: plan addressed to client {client}")
        if clip != self.clip:
            raise ProtocolError(f"packed-Paillier device {self.client_id}: server clip {clip} != ours {self.clip}")
        if self.x is None or self.x.size != length:
            raise ProtocolError(f"packed-Paillier device {self.client_id}: no input of length {length} set")
        layout = choose_layout(clip=clip, precision_bits=bits, max_summands=max_summands,
                               key_bits=self.key.public_key.bits)
        enc = PackedEncryptedVector.encrypt(self.key, self.x, layout, obfuscator=CRTObfuscator(self.key))
        return enc.to_bytes(include_key=False)

    def _download(self, r: Reader) -> None:
        count = r.u32("included count")
        self.included = [r.u32("client id") for _ in range(count)]
        if self.client_id not in self.included:
            raise ProtocolError(f"packed-Paillier device {self.client_id}: not among the included clients")
        down = vector_from_bytes(r.rest(), self.key.public_key, summands=count)
        self.aggregate = down.decrypt(self.key)


class PackedPaillierServer(ServerHalf):
    """The server: multiplies the uploads' ciphertexts; holds the public key only."""

    def __init__(self, public_key: PublicKey, clients: Sequence[int], length: int, *,
                 clip: float = 1.0, precision_bits: int = 16, min_inputs: int = 2) -> None:
        if not isinstance(public_key, PublicKey):
            raise InvalidInputError(f"the server half takes a PublicKey, got {type(public_key).__name__}")
        self.pk, self.clients, self.length = public_key, sorted(int(c) for c in clients), int(length)
        if len(set(self.clients)) != len(self.clients) or self.length < 1:
            raise InvalidInputError("packed-Paillier server: clients must be distinct and length >= 1")
        self.layout: PackingLayout = choose_layout(clip=clip, precision_bits=precision_bits,
                                                   max_summands=max(len(self.clients), 1),
                                                   key_bits=public_key.bits)
        self.min_inputs = min_inputs
        self.stage = "upload"
        self.sum: PackedEncryptedVector | None = None
        self.received: list[int] = []
        self.done = False

    def start(self) -> dict[int, bytes]:
        lay = self.layout
        return {c: _MAGIC + bytes([_UPLOAD]) + struct.pack(_PLAN, c, lay.clip, lay.precision_bits,
                                                             lay.max_summands, self.length)
                + self.pk.fingerprint for c in self.clients}

    def receive(self, client: int, data: bytes) -> None:
        if self.stage != "upload" or client not in self.clients or client in self.received:
            raise ProtocolError(f"packed-Paillier server: unexpected upload from client {client}")
        upload = vector_from_bytes(data, self.pk, check_group=False, summands=1)
        if upload.length != self.length or upload.layout != self.layout:
            raise ProtocolError(f"packed-Paillier server: client {client} sent another layout or length")
        self.sum = upload if self.sum is None else self.sum + upload
        self.received.append(client)

    def advance(self) -> dict[int, bytes]:
        if self.stage == "download":
            self.done = True
            return {}
        if len(self.received) < self.min_inputs:
            raise TooFewInputsError(
                f"paillier_packed: round has {len(self.received)} included input(s), fewer than "
                f"min_inputs={self.min_inputs}; refusing to aggregate")
        check_group_membership(self.pk, self.sum.ciphertexts)  # covers every upload
        included = sorted(self.received)
        head = _MAGIC + bytes([_DOWNLOAD]) + struct.pack(">I", len(included))
        head += b"".join(struct.pack(">I", c) for c in included)
        down = head + self.sum.to_bytes(include_key=False)
        self.stage = "download"
        return {c: down for c in included}

    def result(self) -> SplitResult:
        if not self.done:
            raise ProtocolError("packed-Paillier server: the round is not complete")
        included = sorted(self.received)
        return SplitResult(None, float(len(included)), included,
                           info={"layout": self.layout.describe(), "key_bits": self.pk.bits})


def _check_key(fingerprint: bytes, pk: PublicKey) -> None:
    if fingerprint != pk.fingerprint:
        raise ProtocolError("packed-Paillier: the server's plan names another public key than the client's")
