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
   would do the same decryption, so it runs once and its time is charged to every
   included client's ``client_seconds`` (and its size to ``bytes_down``).

The server learns nothing in clear: ``view.per_client`` stays empty and
``view.aggregate`` is None. ``bytes_up`` is the real serialized upload (the key is named
by its fingerprint, ciphertexts at fixed width). Key generation and obfuscation tables
are built on the first round and reported in ``cost.setup_seconds`` of that round only.

* ``"paillier"``: one value per ciphertext, shared fixed-point codec with
  ``precision_bits`` fractional bits (rounded up to a multiple of 4: base 16). Values
  with |x| > clip raise :class:`InvalidInputError`.
* ``"paillier_packed"``: BatchCrypt-style (:mod:`.packing`): values are clipped to
  |x| <= clip (count in ``info["clipped"]``), client i encrypts w_i x_i as
  c_i = max(1, ceil(w_i)) summands, and the layout has headroom for ``max_summands``
  (default: sum of c_i over the round's clients; a smaller explicit value that the
  round exceeds raises :class:`HeadroomExceededError`). Error per coordinate of the
  aggregate: below (number of included clients) x ``layout.step``, unbiased.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..backend import AggregationBackend, RoundCost, RoundResult, ServerView, register_backend
from ..errors import HeadroomExceededError, InvalidInputError
from .codec import FixedPointCodec
from .keys import DEFAULT_KEY_BITS, PrivateKey, check_key_bits, generate_keypair
from .obfuscation import CRTObfuscator, DJNObfuscator, Obfuscator
from .packing import PackingLayout, choose_layout
from .parallel import check_workers, map_with_key
from .serialization import check_group_membership, vector_from_bytes
from .vector import EncryptedVector, PackedEncryptedVector

OBFUSCATIONS = ("crt", "djn")


class PaillierBackend(AggregationBackend):
    """Unpacked Paillier aggregation (see the module docstring).

    Parameters
    ----------
    key:
        The clients' shared :class:`PrivateKey`; generated on the first round if None.
    key_bits, allow_insecure_small_key:
        Size of a generated key; below 2048 bits needs the explicit opt-in (tests).
    clip:
        Value range |x| <= clip of every coordinate.
    precision_bits:
        Fractional bits of the fixed-point codec (packed: quantization bits).
    obfuscation:
        ``"crt"`` (clients hold the private key: exact, fastest) or ``"djn"``
        (public-key short-exponent path; extra assumption, see :mod:`.obfuscation`).
    workers:
        Processes (None: in-process). Whole client uploads run in parallel worker
        processes (each client's seconds are measured where it ran), and the
        aggregate's decryption is split across them.
    """

    name = "paillier"
    server_learns_aggregate = False

    def __init__(
        self,
        *,
        key: PrivateKey | None = None,
        key_bits: int = DEFAULT_KEY_BITS,
        allow_insecure_small_key: bool = False,
        clip: float = 1.0,
        precision_bits: int = 32,
        obfuscation: str = "crt",
        workers: int | None = None,
        min_inputs: int = 2,
        record_view: bool = False,
    ) -> None:
        super().__init__(min_inputs=min_inputs, record_view=record_view)
        if key is not None and not isinstance(key, PrivateKey):
            raise InvalidInputError(f"key must be a PrivateKey (clients share it), got {type(key).__name__}")
        if key is not None:
            key.public_key.check_size(allow_insecure_small_key)
        else:
            check_key_bits(key_bits, allow_insecure_small_key)
        if not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
            raise InvalidInputError(f"clip must be a finite number > 0, got {clip!r}")
        if obfuscation not in OBFUSCATIONS:
            raise InvalidInputError(f"obfuscation must be one of {OBFUSCATIONS}, got {obfuscation!r}")
        if not isinstance(precision_bits, int) or precision_bits < 2:
            raise InvalidInputError(f"precision_bits must be an integer >= 2, got {precision_bits!r}")
        self.key, self.key_bits, self.allow_insecure_small_key = key, key_bits, allow_insecure_small_key
        self.clip, self.precision_bits = float(clip), precision_bits
        self.obfuscation = obfuscation
        self.workers = check_workers(workers)
        self._obfuscator: Obfuscator | None = None

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
            self._obfuscator = DJNObfuscator(self.key.public_key)
        return time.perf_counter() - t0

    def _job(self, cid: int, x: np.ndarray, weight: float) -> tuple:
        """What client ``cid`` needs to build its upload (see :func:`_upload_unpacked`)."""
        if np.any(np.abs(x) > self.clip):
            raise InvalidInputError(
                f"update of client {cid} has |x| up to {float(np.max(np.abs(x))):.6g}, above clip={self.clip}"
            )
        return (x, weight, FixedPointCodec.from_bits(self.precision_bits).exponent)

    def _uploads(self, vectors, weights, included):
        """(serialized upload, client seconds, clipped count) per included client, in order.

        With ``workers`` > 1 whole client uploads run in worker processes (clients work in
        parallel, as in a deployment); each client's seconds are measured where it ran.
        """
        jobs = (self._job(cid, vectors[cid], weights[cid]) for cid in included)
        fn = _upload_packed if isinstance(self, PackedPaillierBackend) else _upload_unpacked
        if self.workers > 1:
            return map_with_key(self._obfuscator, fn, jobs, self.workers)
        return (fn(self.key, self._obfuscator, job) for job in jobs)

    def _round_info(self, included, weights) -> dict:
        return {}

    def _run_round(self, vectors, weights, dropped):
        cost = RoundCost(setup_seconds=self._setup())
        sk, pk = self.key, self.key.public_key
        included = [c for c in vectors if c not in set(dropped)]
        info = self._round_info(list(vectors), weights)
        info.update(key_bits=pk.bits, obfuscation=self._obfuscator.name,
                    obfuscation_assumption=self._obfuscator.assumption, clipped=0)
        acc = None
        for cid, (blob, seconds, clipped) in zip(included, self._uploads(vectors, weights, included)):
            cost.client_seconds[cid] = seconds
            cost.bytes_up[cid] = len(blob)
            info["clipped"] += clipped
            t1 = time.perf_counter()
            acc = _accumulate(acc, vector_from_bytes(blob, pk, check_group=False))
            cost.server_seconds += time.perf_counter() - t1
        t0 = time.perf_counter()
        check_group_membership(pk, acc.ciphertexts)  # covers every upload (see its docstring)
        down = acc.to_bytes(include_key=False)
        t1 = time.perf_counter()
        cost.server_seconds += t1 - t0
        aggregate = vector_from_bytes(down, pk).decrypt(sk, workers=self.workers)
        decrypt_seconds = time.perf_counter() - t1
        for cid in included:
            cost.client_seconds[cid] += decrypt_seconds
            cost.bytes_down[cid] = len(down)
        info.update(ciphertexts_per_client=len(acc.ciphertexts), decrypt_seconds=decrypt_seconds)
        return RoundResult(
            aggregate=aggregate,
            total_weight=float(sum(weights[c] for c in included)),
            included=included,
            view=ServerView(),
            cost=cost,
            info=info,
        )


def _accumulate(acc, v):
    """acc * v element-wise mod n^2 (homomorphic add), with the vectors' own checks."""
    if acc is None:
        return v
    if isinstance(v, EncryptedVector):
        return acc + v
    return PackedEncryptedVector.sum([acc, v])


class PackedPaillierBackend(PaillierBackend):
    """BatchCrypt-style packed Paillier aggregation (see the module docstring).

    ``max_summands``: declared headroom (default: sum over the round's clients of
    max(1, ceil(w_i))). ``precision_bits`` (default 16) are the quantization bits.
    """

    name = "paillier_packed"

    def __init__(self, *, precision_bits: int = 16, max_summands: int | None = None, **options) -> None:
        super().__init__(precision_bits=precision_bits, **options)
        if max_summands is not None and (not isinstance(max_summands, int) or max_summands < 1):
            raise InvalidInputError(f"max_summands must be an integer >= 1, got {max_summands!r}")
        self.max_summands = max_summands
        self.layout = None

    def _round_info(self, clients, weights) -> dict:
        needed = sum(_summands(weights[c]) for c in clients)
        k = self.max_summands if self.max_summands is not None else needed
        self.layout = choose_layout(
            clip=self.clip, precision_bits=self.precision_bits, max_summands=k,
            key_bits=self.key.public_key.bits,
        )
        return {"layout": self.layout.describe(), "summands_declared": needed}

    def _job(self, cid, x, weight):
        lay = self.layout
        if _summands(weight) > lay.max_summands:
            raise HeadroomExceededError(
                f"client {cid} has weight {weight}, i.e. {_summands(weight)} summands, above "
                f"max_summands={lay.max_summands}"
            )
        return (x, weight, (lay.clip, lay.precision_bits, lay.max_summands, lay.key_bits))


def _summands(weight: float) -> int:
    return max(1, math.ceil(weight))


def _upload_unpacked(key, obfuscator, job) -> tuple[bytes, float, int]:
    """One client: encrypt w x (fixed point) and serialize; returns (blob, seconds, 0)."""
    t0 = time.perf_counter()
    x, weight, exponent = job
    enc = EncryptedVector.encrypt(key, weight * x, codec=FixedPointCodec(exponent), obfuscator=obfuscator)
    blob = enc.to_bytes(include_key=False)
    return blob, time.perf_counter() - t0, 0


def _upload_packed(key, obfuscator, job) -> tuple[bytes, float, int]:
    """One client: clip, weight, quantize, pack, encrypt and serialize; (blob, seconds, clipped)."""
    t0 = time.perf_counter()
    x, weight, layout_params = job
    layout = PackingLayout(*layout_params)
    clipped = int(np.count_nonzero(np.abs(x) > layout.clip))
    y = weight * np.clip(x, -layout.clip, layout.clip)
    enc = PackedEncryptedVector.encrypt(key, y, layout, summands=_summands(weight), obfuscator=obfuscator)
    blob = enc.to_bytes(include_key=False)
    return blob, time.perf_counter() - t0, clipped


register_backend("paillier", PaillierBackend)
register_backend("paillier_packed", PackedPaillierBackend)
