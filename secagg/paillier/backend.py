"""The ``"paillier"`` and ``"paillier_packed"`` aggregation backends (FedMF-style HE aggregation).

Setting (FedMF, Chai et al. 2019): all clients share one Paillier key pair; the server
holds only the public key. Each round, in this in-process simulation:

1. every included client i encrypts w_i x_i (it knows its own weight, so the weighting
   happens in clear before encryption) and uploads the serialized ciphertexts;
2. the server parses each upload (format, key, sizes, 0 < c < n^2) and multiplies the
   ciphertexts (homomorphic sum) as they arrive, so memory stays at one aggregate;
   membership of every ciphertext in Z*_{n^2} is checked once on the aggregate (a
   factor of n in any upload survives into the product);
3. the aggregate ciphertext goes back down and the clients decrypt it. Every client
   would run the same decryption on the same ciphertexts, so the simulation runs it
   once per round (split across ``workers`` processes) and charges each included
   client its measured single-device cost (the workers' summed seconds, not the
   shorter wall time): ``cost.shared_client_seconds[cid]``, included in
   ``cost.client_seconds[cid]``; the download's size goes to ``bytes_down``.
   ``decrypt="per_client"`` instead has every client decrypt its download itself
   (sequentially, as a device would; slow) and checks that every client's result is
   bit-identical to the once-decrypted aggregate (:class:`ProtocolError` otherwise):
   the check that decrypting once loses nothing, and a measurement of the real cost.

The server learns nothing in clear: ``view.per_client`` stays empty and
``view.aggregate`` is None. ``bytes_up`` is the real serialized upload (the key is named
by its fingerprint, ciphertexts at fixed width). Key generation and obfuscation tables
are built on the first round and reported in ``cost.setup_seconds`` of that round only.

Values outside [-clip, clip] follow the contract's ``out_of_range`` policy
(:mod:`secagg.backend`). The server counts what it adds itself: it loads upload i
stating the bound (unpacked) or summand count (packed) that client i's clip and weight
allow, never a count read from the message; packed ciphertexts also carry their true
count encrypted, checked at decryption (:mod:`.packing`).

* ``"paillier"``: one value per ciphertext, shared fixed-point codec with
  ``precision_bits`` fractional bits (rounded up to a multiple of 4: base 16).
* ``"paillier_packed"``: BatchCrypt-style (:mod:`.packing`): client i encrypts w_i x_i
  as c_i = max(1, ceil(w_i)) summands, and the layout has headroom for ``max_summands``
  (default: sum of c_i over the round's clients; a smaller explicit value that the
  round exceeds raises :class:`HeadroomExceededError`). Error per coordinate of the
  aggregate: below (number of included clients) x ``layout.step``, unbiased.

Both aggregate sparse (PartText) rounds sparsely: a client encrypts and uploads only
the cells its support blocks touch (entries; for the packed backend the ciphertexts
holding its blocks, laid out *item-aligned* by :func:`.packing.aligned_positions`: each
block in whole ciphertexts, blocks grouped by index) with their 4-byte indices, and the
server multiplies ciphertexts cell by cell, counting per cell what it added. Each
client downloads and decrypts the aggregate of its own cells only (all a FedMF
PartText client needs for its next update); the simulation decrypts every touched cell
once and charges each client the measured seconds per cell times its cell count.
What the server learns in a sparse round: which cells each client uploads and
downloads, i.e. its support rounded up to whole groups (packed: the groups holding a
rated item; unpacked: the support itself); never a value. Process pools
(``workers`` > 1) are released by :meth:`PaillierBackend.close`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..backend import (
    AggregationBackend,
    RoundCost,
    RoundResult,
    ServerView,
    check_workers,
    register_backend,
)
from ..errors import HeadroomExceededError, InsecureParameterError, InvalidInputError, ProtocolError
from .codec import FixedPointCodec
from .keys import DEFAULT_KEY_BITS, PrivateKey, check_key_bits, generate_keypair
from .obfuscation import CRTObfuscator, DJNObfuscator, Obfuscator, min_djn_exponent_bits
from .packing import PackingLayout, aligned_positions, choose_layout
from .parallel import close_executors, map_with_key
from .serialization import check_group_membership, vector_from_bytes
from .vector import EncryptedVector, PackedEncryptedVector, decrypt_integers_timed

OBFUSCATIONS = ("crt", "djn")
DECRYPT = ("once", "per_client")


class PaillierBackend(AggregationBackend):
    """Unpacked Paillier aggregation (see the module docstring).

    Parameters
    ----------
    key:
        The clients' shared :class:`PrivateKey`; generated on the first round if None.
    key_bits, allow_insecure_small_key:
        Size of a generated key; below 2048 bits needs the explicit opt-in (tests).
    clip, out_of_range:
        Value range |x| <= clip of every coordinate and the contract's policy outside it.
    precision_bits:
        Fractional bits of the fixed-point codec (packed: quantization bits).
    obfuscation:
        ``"crt"`` (clients hold the private key: exact, fastest) or ``"djn"``
        (public-key short-exponent path; extra assumption, see :mod:`.obfuscation`).
    djn_exponent_bits:
        ``"djn"`` only: the short exponent's length (default ceil(|n| / 2), as DJN; at
        least twice the key's security level, e.g. 224 for 2048 bits; the shorter, the
        more the assumption carries). The clients hold the private key, so R = h_s^a is
        computed through CRT: 224 bits is about 5x faster than ``"crt"`` at 2048 bits.
    workers:
        Processes (1: in-process). Whole client uploads run in parallel worker
        processes (each client's seconds are measured where it ran), and the
        aggregate's decryption is split across them.
    decrypt:
        ``"once"`` (default): the shared aggregate is decrypted once per round and its
        measured cost charged to every client; ``"per_client"``: every client decrypts
        its download itself and the results are checked bit-identical (module docstring).
    """

    name = "paillier"
    server_learns_aggregate = False
    sparse_capable = True

    def __init__(
        self,
        *,
        key: PrivateKey | None = None,
        key_bits: int = DEFAULT_KEY_BITS,
        allow_insecure_small_key: bool = False,
        clip: float = 1.0,
        out_of_range: str = "raise",
        precision_bits: int = 32,
        obfuscation: str = "crt",
        djn_exponent_bits: int | None = None,
        workers: int = 1,
        decrypt: str = "once",
        min_inputs: int = 2,
        record_view: bool = False,
    ) -> None:
        if clip is None:
            raise InvalidInputError("Paillier backends need a finite clip (the encoding's range)")
        super().__init__(min_inputs=min_inputs, record_view=record_view, clip=clip,
                         out_of_range=out_of_range)
        if key is not None and not isinstance(key, PrivateKey):
            raise InvalidInputError(f"key must be a PrivateKey (clients share it), got {type(key).__name__}")
        if key is not None:
            key.public_key.check_size(allow_insecure_small_key)
        else:
            check_key_bits(key_bits, allow_insecure_small_key)
        if obfuscation not in OBFUSCATIONS:
            raise InvalidInputError(f"obfuscation must be one of {OBFUSCATIONS}, got {obfuscation!r}")
        if djn_exponent_bits is not None:
            if obfuscation != "djn":
                raise InvalidInputError("djn_exponent_bits applies to obfuscation='djn' only")
            least = min_djn_exponent_bits(key.public_key.bits if key is not None else key_bits)
            if isinstance(djn_exponent_bits, bool) or not isinstance(djn_exponent_bits, int) \
                    or djn_exponent_bits < least:
                raise InsecureParameterError(
                    f"djn_exponent_bits must be an integer >= {least} for this key size, got {djn_exponent_bits!r}")
        self.djn_exponent_bits = djn_exponent_bits
        if decrypt not in DECRYPT:
            raise InvalidInputError(f"decrypt must be one of {DECRYPT}, got {decrypt!r}")
        self.decrypt = decrypt
        if isinstance(precision_bits, bool) or not isinstance(precision_bits, int) or precision_bits < 2:
            raise InvalidInputError(f"precision_bits must be an integer >= 2, got {precision_bits!r}")
        self.key, self.key_bits, self.allow_insecure_small_key = key, key_bits, allow_insecure_small_key
        self.precision_bits = precision_bits
        self.obfuscation = obfuscation
        self.workers = check_workers(workers)
        self._obfuscator: Obfuscator | None = None

    def close(self) -> None:
        """Shut down this key's worker processes (if any ran)."""
        if self.key is not None:
            close_executors(self.key)

    def _setup(self) -> float:
        """Generate the key and obfuscation tables if not done yet; return the seconds spent."""
        if self._obfuscator is not None:
            return 0.0
        t0 = time.perf_counter()
        if self.key is None:
            self.key = generate_keypair(
                self.key_bits, allow_insecure_small_key=self.allow_insecure_small_key
            )[1]
        if self.obfuscation == "crt":
            self._obfuscator = CRTObfuscator(self.key)
        else:
            self._obfuscator = DJNObfuscator(self.key.public_key, exponent_bits=self.djn_exponent_bits,
                                             private_key=self.key)
        return time.perf_counter() - t0

    # -- one round's plan: everything the clients and the server agree on beforehand --

    def _plan(self, clients: list[int], weights: dict[int, float], length: int, block_size: int) -> dict:
        """The round's public parameters (here the codec exponent), fixed before any upload."""
        return {"exponent": FixedPointCodec.from_bits(self.precision_bits).exponent}

    def _job(self, plan: dict, cid: int, x: np.ndarray, weight: float) -> tuple:
        """What client ``cid`` needs to build its upload with :attr:`_upload`."""
        return (x, weight, plan["exponent"])

    def _vouched(self, plan: dict, weight: float) -> dict:
        """What the server states a client's upload holds (never read from the upload):
        |int_rep| <= round(w clip 16^-e) (+1 for float rounding)."""
        scale = FixedPointCodec(plan["exponent"]).scale
        return {"bound": math.floor(weight * self.clip * scale) + 1}

    @staticmethod
    def _upload(key, obfuscator, job) -> tuple[bytes, float]:
        return _upload_unpacked(key, obfuscator, job)

    def _info(self, plan: dict) -> dict:
        return {}

    def _uploads(self, plan, vectors, weights, included):
        """(serialized upload, client seconds) per included client, in order.

        With ``workers`` > 1 whole client uploads run in worker processes (clients work in
        parallel, as in a deployment); each client's seconds are measured where it ran.
        """
        jobs = (self._job(plan, cid, vectors[cid], weights[cid]) for cid in included)
        if self.workers > 1:
            return map_with_key(self._obfuscator, self._upload, jobs, self.workers)
        return (self._upload(self.key, self._obfuscator, job) for job in jobs)

    # -- cells: the unit a client uploads and the server sums (an entry; packed: a ciphertext) --

    def _cells(self, plan: dict, length: int, blocks: np.ndarray | None, block_size: int) -> np.ndarray:
        """The entries a client uploads: all of them, or those of its support blocks."""
        if blocks is None:
            return np.arange(length)
        return (blocks[:, None] * block_size + np.arange(block_size)).ravel()

    def _compact(self, plan: dict, x: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """The values a client encrypts for ``cells``."""
        return x[cells]

    def _download(self, plan: dict, pk, ciphertexts: list, bound: int):
        return EncryptedVector(pk, ciphertexts, plan["exponent"], bound)

    def _decode(self, plan: dict, sk, down, cells: np.ndarray, length: int,
                workers: int) -> tuple[np.ndarray, float]:
        """The full-length aggregate from the decrypted cells (untouched entries are 0), and
        the single-device seconds of the decryption."""
        plain, seconds = decrypt_integers_timed(sk, down.ciphertexts, workers=workers)
        out = np.zeros(length)
        out[cells] = down.decode_plaintexts(plain)
        return out, seconds

    def _run_round(self, vectors, weights, dropped, progress):
        return self._round(vectors, weights, dropped, None, 1, progress)

    def _run_sparse_round(self, vectors, weights, dropped, support, block_size, dense_fallback, progress):
        """PartText: each client encrypts and uploads only the cells of its support blocks
        (with their indices, 4 bytes each); the server multiplies ciphertexts cell by cell."""
        return self._round(vectors, weights, dropped, support, block_size, progress)

    def _round(self, vectors, weights, dropped, support, block_size, progress):
        """One round; ``progress(cid)`` once the server has multiplied in client ``cid``'s upload
        (in this process, as results arrive from the workers when ``workers`` > 1)."""
        cost = RoundCost(setup_seconds=self._setup())
        sk, pk = self.key, self.key.public_key
        n2 = pk.nsquare
        included = [c for c in vectors if c not in set(dropped)]
        length = next(iter(vectors.values())).shape[0]
        plan = self._plan(list(vectors), weights, length, block_size)
        info = self._info(plan)
        info.update(key_bits=pk.bits, obfuscation=self._obfuscator.name,
                    obfuscation_assumption=self._obfuscator.assumption)
        cells = {cid: self._cells(plan, length, None if support is None else support[cid], block_size)
                 for cid in included}
        compact = {cid: self._compact(plan, vectors[cid], cells[cid]) for cid in included}
        index_bytes = 0 if support is None else 4
        acc: dict[int, object] = {}
        counts: dict[int, int] = {}
        bound = 0
        for cid, (blob, seconds) in zip(included, self._uploads(plan, compact, weights, included)):
            cost.client_seconds[cid] = seconds
            cost.bytes_up[cid] = len(blob) + index_bytes * len(cells[cid])
            t1 = time.perf_counter()
            vouched = self._vouched(plan, weights[cid])
            upload = vector_from_bytes(blob, pk, check_group=False, **vouched)
            if len(upload.ciphertexts) != len(cells[cid]):
                raise InvalidInputError(f"upload of client {cid} has the wrong number of ciphertexts")
            add = vouched.get("summands", 1)
            bound += vouched.get("bound", 0)
            for cell, c in zip(cells[cid].tolist(), upload.ciphertexts):
                acc[cell] = acc[cell] * c % n2 if cell in acc else c
                counts[cell] = counts.get(cell, 0) + add
            self._check_headroom(plan, max(counts.values(), default=0))
            cost.server_seconds += time.perf_counter() - t1
            progress(cid)
        t0 = time.perf_counter()
        touched = np.array(sorted(acc), dtype=np.int64)
        cts = [acc[c] for c in touched.tolist()]
        check_group_membership(pk, cts)  # covers every upload (see its docstring)
        down = self._download(plan, pk, cts, bound).to_bytes(include_key=False)
        cost.server_seconds += time.perf_counter() - t0
        # decrypted once for everyone; each client pays for the cells it downloads
        down_vector = vector_from_bytes(down, pk)
        aggregate, decrypt_seconds = self._decode(plan, sk, down_vector, touched, length, self.workers)
        per_cell = decrypt_seconds / max(len(cts), 1)
        header = len(down) - pk.ciphertext_bytes * len(cts)
        for cid in included:
            if self.decrypt == "per_client":
                cost.client_seconds[cid] += self._decrypt_as_client(
                    plan, sk, down_vector, touched, cells[cid], length, aggregate, cid)
            else:
                cost.shared_client_seconds[cid] = per_cell * len(cells[cid])
                cost.client_seconds[cid] += cost.shared_client_seconds[cid]
            cost.bytes_down[cid] = header + pk.ciphertext_bytes * len(cells[cid])
        info.update(ciphertexts_per_client=len(cts), decrypt_seconds=decrypt_seconds)
        return RoundResult(
            aggregate=aggregate,
            total_weight=float(sum(weights[c] for c in included)),
            included=included,
            view=ServerView(support={} if support is None else {
                cid: np.unique(self._entries(plan, length, cells[cid]) // block_size) for cid in included}),
            cost=cost,
            info=info,
        )

    def _decrypt_as_client(self, plan, sk, down, touched, mine, length, aggregate, cid) -> float:
        """Client ``cid`` decrypts its own cells of the download in one process; its result
        must be bit-identical to ``aggregate`` on them. Returns its seconds."""
        rows = np.searchsorted(touched, mine)
        own = self._download(plan, down.public_key, [down.ciphertexts[r] for r in rows.tolist()], _down_bound(down))
        mine_out, seconds = self._decode(plan, sk, own, mine, length, 1)
        held = self._entries(plan, length, mine)
        if not np.array_equal(mine_out[held], aggregate[held]):
            raise ProtocolError(f"client {cid} decrypted a different aggregate than the shared decryption")
        return seconds

    def _entries(self, plan, length, cells) -> np.ndarray:
        """The vector entries held by ``cells`` (unpacked: the cells are entries)."""
        return cells

    def _check_headroom(self, plan: dict, most: int) -> None:
        """Unpacked: the vouched bounds are checked when the download is built."""


class PackedPaillierBackend(PaillierBackend):
    """BatchCrypt-style packed Paillier aggregation (see the module docstring).

    ``max_summands``: declared headroom (default: sum over the round's clients of
    max(1, ceil(w_i))). ``precision_bits`` (default 16) are the quantization bits.
    """

    name = "paillier_packed"

    def __init__(
        self,
        *,
        key: PrivateKey | None = None,
        key_bits: int = DEFAULT_KEY_BITS,
        allow_insecure_small_key: bool = False,
        clip: float = 1.0,
        out_of_range: str = "raise",
        precision_bits: int = 16,
        max_summands: int | None = None,
        obfuscation: str = "crt",
        djn_exponent_bits: int | None = None,
        workers: int = 1,
        decrypt: str = "once",
        min_inputs: int = 2,
        record_view: bool = False,
    ) -> None:
        super().__init__(key=key, key_bits=key_bits, allow_insecure_small_key=allow_insecure_small_key,
                         clip=clip, out_of_range=out_of_range, precision_bits=precision_bits,
                         obfuscation=obfuscation, djn_exponent_bits=djn_exponent_bits,
                         workers=workers, decrypt=decrypt,
                         min_inputs=min_inputs, record_view=record_view)
        if max_summands is not None and (
            isinstance(max_summands, bool) or not isinstance(max_summands, int) or max_summands < 1
        ):
            raise InvalidInputError(f"max_summands must be an integer >= 1, got {max_summands!r}")
        self.max_summands = max_summands

    def device_half(self, client_id: int, *, weight: int = 1):
        """The client side of a split dense round (:mod:`.halves`): needs the shared private key."""
        from .halves import PackedPaillierDevice

        if weight != 1:
            raise InvalidInputError("the split paillier_packed round takes unit weights only")
        self._setup()
        return PackedPaillierDevice(self.key, client_id, clip=self.clip, out_of_range=self.out_of_range)

    def server_half(self, clients, length, *, weights=None):
        """The server side of a split dense round (:mod:`.halves`): given the public key only."""
        from .halves import PackedPaillierServer

        if weights is not None and any(w != 1 for w in weights.values()):
            raise InvalidInputError("the split paillier_packed round takes unit weights only")
        self._setup()
        return PackedPaillierServer(self.key.public_key, clients, length, clip=self.clip,
                                    precision_bits=self.precision_bits, min_inputs=self.min_inputs)

    def _plan(self, clients, weights, length, block_size) -> dict:
        needed = sum(_summands(weights[c]) for c in clients)
        k = self.max_summands if self.max_summands is not None else needed
        layout = choose_layout(
            clip=self.clip, precision_bits=self.precision_bits, max_summands=k,
            key_bits=self.key.public_key.bits,
        )
        positions, n_cells = aligned_positions(length, block_size, layout.slots)
        return {"layout": layout, "summands_declared": needed, "positions": positions, "cells": n_cells}

    def _info(self, plan) -> dict:
        return {"layout": plan["layout"].describe(), "summands_declared": plan["summands_declared"]}

    def _job(self, plan, cid, x, weight):
        lay = plan["layout"]
        if _summands(weight) > lay.max_summands:
            raise HeadroomExceededError(
                f"client {cid} has weight {weight}, i.e. {_summands(weight)} summands, above "
                f"max_summands={lay.max_summands}"
            )
        return (x, weight, (lay.clip, lay.precision_bits, lay.max_summands, lay.key_bits))

    def _vouched(self, plan, weight) -> dict:
        return {"summands": _summands(weight)}

    def _cells(self, plan, length, blocks, block_size) -> np.ndarray:
        """Ciphertext indices: all, or those holding the support's blocks (item-aligned)."""
        if blocks is None:
            return np.arange(plan["cells"])
        entries = super()._cells(plan, length, blocks, block_size)
        return np.unique(plan["positions"][entries] // plan["layout"].slots)

    def _compact(self, plan, x, cells) -> np.ndarray:
        """The slots of ``cells`` in the item-aligned layout (padding slots hold 0)."""
        slots = plan["layout"].slots
        padded = np.zeros(plan["cells"] * slots)
        padded[plan["positions"]] = x
        return padded.reshape(-1, slots)[cells].ravel()

    def _entries(self, plan, length, cells) -> np.ndarray:
        held = np.isin(plan["positions"] // plan["layout"].slots, cells)
        return np.flatnonzero(held)

    def _check_headroom(self, plan, most) -> None:
        k = plan["layout"].max_summands
        if most > k:
            raise HeadroomExceededError(
                f"a ciphertext would absorb {most} summands, above the declared headroom "
                f"max_summands={k}: a slot could overflow into its neighbour"
            )

    def _download(self, plan, pk, ciphertexts, bound):
        lay = plan["layout"]
        return PackedEncryptedVector(pk, ciphertexts, lay, len(ciphertexts) * lay.slots, lay.max_summands)

    def _decode(self, plan, sk, down, cells, length, workers) -> tuple[np.ndarray, float]:
        """Each ciphertext decoded with its own encrypted summand count (cells differ in
        how many clients touched them in a sparse round)."""
        lay = plan["layout"]
        plain, seconds = decrypt_integers_timed(sk, down.ciphertexts, workers=workers)
        slot_values, counts = lay.unpack_counted(plain)
        rows = slot_values.reshape(len(cells), lay.slots)
        out = np.zeros(plan["cells"] * lay.slots)
        for row, cell, count in zip(rows, cells.tolist(), counts):
            sums = lay.slot_sums(row, lay.slots, lay.check_counts(np.array([count])))
            out[cell * lay.slots:(cell + 1) * lay.slots] = lay.dequantize(sums)
        return out[plan["positions"]], seconds

    @staticmethod
    def _upload(key, obfuscator, job) -> tuple[bytes, float]:
        return _upload_packed(key, obfuscator, job)


def _down_bound(down) -> int:
    """The public counter a download carries (unpacked: its bound; packed: its summands)."""
    return down.bound if isinstance(down, EncryptedVector) else down.summands


def _summands(weight: float) -> int:
    return max(1, math.ceil(weight))


def _upload_unpacked(key, obfuscator, job) -> tuple[bytes, float]:
    """One client: encrypt w x (fixed point) and serialize; returns (blob, seconds)."""
    t0 = time.perf_counter()
    x, weight, exponent = job
    enc = EncryptedVector.encrypt(key, weight * x, codec=FixedPointCodec(exponent), obfuscator=obfuscator)
    blob = enc.to_bytes(include_key=False)
    return blob, time.perf_counter() - t0


def _upload_packed(key, obfuscator, job) -> tuple[bytes, float]:
    """One client: weight, quantize, pack, encrypt and serialize; (blob, seconds).

    x is already within [-clip, clip] (the contract's range policy ran before).
    """
    t0 = time.perf_counter()
    x, weight, layout_params = job
    layout = PackingLayout(*layout_params)
    enc = PackedEncryptedVector.encrypt(key, weight * x, layout, summands=_summands(weight), obfuscator=obfuscator)
    blob = enc.to_bytes(include_key=False)
    return blob, time.perf_counter() - t0


register_backend("paillier", PaillierBackend)
register_backend("paillier_packed", PackedPaillierBackend)
