"""The aggregation backend interface: one small object a training loop calls once a round.

A backend takes the participants' update vectors for one round (and optional
weights), runs its protocol, and returns a :class:`RoundResult`:

* ``aggregate``: the weighted sum  sum_i w_i x_i  over the included clients
  (``result.mean`` divides by the total weight, for FedAvg);
* ``view``: what the server observed (:class:`ServerView`), for attacks and audits;
* ``cost``: measured per-round cost (:class:`RoundCost`): client and server seconds,
  bytes up and down per client;
* ``info``: a :class:`RoundInfo` (typed dict) of facts about the round.

Trainers depend only on :meth:`AggregationBackend.aggregate`; a new backend is a
subclass registered with :func:`register_backend`, chosen by name with
:func:`make_backend`.

The backend contract
--------------------
Every registered backend (``available_backends()``) keeps it; ``tests/test_backend_contract.py``
checks it for each one.

* **Configured by its constructor, never patched afterwards.** Options are keyword
  arguments; ``make_backend(name, **options)`` refuses an option the backend does not
  take (:class:`InvalidInputError` naming it and the accepted ones) and
  ``make_backend(instance, **options)`` refuses any option (the instance is already
  configured). No code sets attributes on a backend it was handed.
* **Option names** (same name, same meaning, everywhere they apply):

  - ``min_inputs`` (int, default 2): fewer included inputs raise
    :class:`TooFewInputsError` (stops a server isolating one client);
  - ``record_view`` (bool, default False): keep ``view.per_client``;
  - ``clip`` (float > 0): every coordinate must lie in [-clip, clip]; default 1.0 for
    the encoding backends, None (unbounded) for ``plain``;
  - ``out_of_range`` (``"raise"`` | ``"clip"``, default ``"raise"``): what happens to a
    coordinate outside [-clip, clip]. ``"raise"``: :class:`InvalidInputError` naming
    the client and value, before any protocol work. ``"clip"``: it is clipped to the
    range (an explicit choice; the count is reported). Never a silent wrong answer;
  - ``precision_bits`` (int): quantization / fixed-point bits of the encoding
    backends (``paillier``: fractional bits; ``paillier_packed``, ``secagg``,
    ``secagg+``: bits per quantized value);
  - ``workers`` (int, default 1): processes for client work, checked by
    :func:`check_workers` (backends that have no client work do not take it).

* **Sparse (PartText) rounds.** ``aggregate(..., support=...)`` is aggregated sparsely
  by backends with ``sparse_capable = True`` (only the support blocks are uploaded:
  ``plain``, ``paillier``, ``paillier_packed``, and the adaptive backend when its
  paths are). The others (``secagg``, ``secagg+``: masks cover the whole vector)
  refuse it with :class:`InvalidInputError` unless the caller passes
  ``dense_fallback=True``, the named opt-in to run the round densely (no upload
  saving; the server still learns the declared support).
* **Typed info.** ``result.info`` always holds the :class:`RoundInfo` contract keys
  ``clipped`` (int: coordinates clipped this round, 0 under ``"raise"``),
  ``out_of_range`` (the policy) and ``sparse`` (``"none"``: no support given,
  ``"sparse"``: aggregated sparsely, ``"dense"``: run densely by the opt-in), plus
  the backend's own documented keys.
* **Split form** (:mod:`secagg.split`). ``device_half(client_id, weight=1)`` is what one
  client runs on its own vector and ``server_half(clients, length, weights=None)`` what
  the server runs on the bytes it receives; ``aggregate`` runs the same halves in one
  process, :mod:`secagg.flower` over Flower. ``plain``, ``secagg``, ``secagg+`` and
  ``paillier_packed`` (dense, unit weights; the clients decrypt, the server's result has
  no aggregate) have one; the others raise NotImplementedError naming the backend.
* **Progress hook.** ``aggregate(..., progress=hook)`` (optional, a plain callable
  ``hook(client_id)``) is called exactly once per included client, in this process, as
  the server absorbs that client's (protected) upload: never for a dropped client,
  never with a value, and from the parent process even when ``workers`` > 1 run the
  clients elsewhere. A long round (packed Paillier over hundreds of clients) can thus
  drive a per-client progress bar; an exception raised by the hook aborts the round.
  It is a per-call argument, not a constructor option: it describes the caller's
  display, not the backend's configuration.
* **Resources.** ``close()`` releases what the backend holds (process pools); a
  backend is also a context manager that closes on exit.

A plain numpy FedAvg loop with any backend::

    import numpy as np
    from secagg import make_backend

    backend = make_backend("plain", min_inputs=3)
    model = np.zeros(10)
    data = [np.random.default_rng(i).normal(i, 1, 10) for i in range(5)]
    for rnd in range(3):
        updates = {cid: x - model for cid, x in enumerate(data)}
        result = backend.aggregate(updates, weights={cid: 1.0 for cid in updates})
        model = model + result.mean
        print(rnd, result.cost.server_seconds, result.cost.bytes_up)
"""

from __future__ import annotations

import abc
import inspect
import math
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from .errors import InvalidInputError, MalformedMessageError, ProtocolError, TooFewInputsError
from .split import DeviceHalf, ServerHalf, SplitResult, run_in_process
from .wire import Reader


@dataclass
class RoundCost:
    """Measured cost of one round. Seconds are wall-clock; bytes are what crossed the wire.

    ``client_seconds[cid]`` is the compute client ``cid`` spent on the protocol
    (encoding, encryption or masking, and reading the result back); clients run in
    parallel in a deployment, so the round's client cost is the maximum or mean of it.
    ``bytes_up[cid]`` / ``bytes_down[cid]`` are the protocol's bytes from / to client
    ``cid`` this round. The aggregate counts in ``bytes_down`` only where the protocol
    itself must deliver it to the clients (Paillier: only they can decrypt it); where
    the server learns it in clear (``plain``, ``secagg``, ``secagg+``) sending the new
    model is the trainer's broadcast, the same for every backend, and is not counted.
    ``setup_seconds`` is one-off work outside the round (key generation, filling an
    obfuscator pool), reported separately, never hidden in the per-round numbers.
    ``shared_client_seconds[cid]`` is the part of ``client_seconds[cid]`` that every client
    computes on identical inputs (Paillier: decrypting the shared aggregate): the
    simulation runs it once per round and charges each client its measured
    single-device cost, so ``client_seconds`` stays what a real device pays.
    """

    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    setup_seconds: float = 0.0
    shared_client_seconds: dict[int, float] = field(default_factory=dict)

    def mean_client_seconds(self) -> float:
        return float(np.mean(list(self.client_seconds.values()))) if self.client_seconds else 0.0

    def mean_bytes_up(self) -> float:
        return float(np.mean(list(self.bytes_up.values()))) if self.bytes_up else 0.0

    def mean_bytes_down(self) -> float:
        return float(np.mean(list(self.bytes_down.values()))) if self.bytes_down else 0.0


@dataclass
class ServerView:
    """What an honest-but-curious server observed in one round.

    ``per_client[cid]`` is the float vector the server can decode from client
    ``cid``'s upload using public information only: the update itself for the plain
    backend, the masked vector (uniform noise) for pairwise masking, nothing for
    Paillier (ciphertexts decode to nothing without the key).
    ``aggregate`` is the sum in clear when the server learns it (plain, SecAgg) and
    ``None`` when it stays encrypted under the clients' key (Paillier).
    """

    per_client: dict[int, np.ndarray] = field(default_factory=dict)
    aggregate: np.ndarray | None = None
    #: sparse rounds only (a leak by design): the block indices the server can tell may be
    #: non-zero in each client's update. The declared support, or a superset of it when
    #: the upload reveals whole groups only (packed Paillier: every block of a ciphertext
    #: the client uploads).
    support: dict[int, np.ndarray] = field(default_factory=dict)


OUT_OF_RANGE = ("raise", "clip")
SPARSE_MODES = ("none", "sparse", "dense")


class RoundInfo(TypedDict, total=False):
    """``result.info``: the contract keys every backend sets, then backend-specific keys.

    Contract keys (always present): ``clipped``, ``out_of_range``, ``sparse`` (see the
    module docstring). Keys some backends add: ``key_bits``, ``obfuscation``,
    ``obfuscation_assumption``, ``layout``, ``summands_declared``,
    ``ciphertexts_per_client``, ``decrypt_seconds`` (Paillier); ``k``, ``t``,
    ``complete_graph``, ``security_bits``, ``correctness_bits``, ``corrupt_rate``,
    ``dropout_rate``, ``modulus``, ``modulus_bits``, ``precision_bits``, ``clip``,
    ``weight_scale``, ``drop_stage``, ``active`` (SecAgg); ``plaintext``,
    ``encrypted``, ``promoted``, ``encrypted_fraction``, ``risk``, ``plain_info``,
    ``encrypted_info``, ``plain_cost``, ``encrypted_cost``, ``policy_client_seconds``
    (adaptive).
    """

    clipped: int
    out_of_range: str
    sparse: str
    key_bits: int
    obfuscation: str
    obfuscation_assumption: str
    layout: dict
    summands_declared: int
    ciphertexts_per_client: int
    decrypt_seconds: float
    k: int
    t: int
    precision_bits: int


@dataclass
class RoundResult:
    """The outcome of :meth:`AggregationBackend.aggregate`."""

    aggregate: np.ndarray
    total_weight: float
    included: list[int]
    view: ServerView
    cost: RoundCost
    #: facts about the round: the contract keys and the backend's own (:class:`RoundInfo`)
    info: RoundInfo = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        """The weighted mean  sum_i w_i x_i / sum_i w_i."""
        return self.aggregate / self.total_weight


Updates = Mapping[int, np.ndarray] | Sequence[np.ndarray]


class AggregationBackend(abc.ABC):
    """Base class of aggregation backends. Subclasses implement :meth:`_run_round`.

    Parameters (the contract's common options, see the module docstring)
    ----------
    min_inputs:
        The smallest number of included inputs a round may have; smaller rounds raise
        :class:`TooFewInputsError`. The default 2 already stops a cohort of one;
        raise it to the cohort size you want to hide in.
    record_view:
        Keep the per-client :class:`ServerView` (memory grows with clients x length).
    clip, out_of_range:
        The value range [-clip, clip] (None, the base default: unbounded) and the policy
        for values outside it (``"raise"`` or ``"clip"``), applied here before the
        protocol runs. Backends with a fixed-range encoding pass their own default.
    """

    name: str = "abstract"
    #: True when the server learns the aggregate in clear.
    server_learns_aggregate: bool = True
    #: True when the server cannot read an individual update (encryption or masking).
    hides_updates: bool = True
    #: True when ``support=`` rounds are aggregated sparsely (else refused or dense).
    sparse_capable: bool = False

    def __init__(
        self,
        *,
        min_inputs: int = 2,
        record_view: bool = False,
        clip: float | None = None,
        out_of_range: str = "raise",
    ) -> None:
        if isinstance(min_inputs, bool) or not isinstance(min_inputs, int | np.integer) or min_inputs < 1:
            raise InvalidInputError(f"min_inputs must be an integer >= 1, got {min_inputs!r}")
        if not isinstance(record_view, bool):
            raise InvalidInputError(f"record_view must be True or False, got {record_view!r}")
        if clip is not None and not (
            isinstance(clip, int | float) and not isinstance(clip, bool) and math.isfinite(clip) and clip > 0
        ):
            raise InvalidInputError(f"clip must be a finite number > 0 (or None: unbounded), got {clip!r}")
        if out_of_range not in OUT_OF_RANGE:
            raise InvalidInputError(f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}")
        self.min_inputs = int(min_inputs)
        self.record_view = record_view
        self.clip = None if clip is None else float(clip)
        self.out_of_range = out_of_range

    def close(self) -> None:
        """Release held resources (process pools); the backend may not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def aggregate(
        self,
        updates: Updates,
        *,
        weights: Mapping[int, float] | None = None,
        dropped: Collection[int] = (),
        support: Mapping[int, np.ndarray] | None = None,
        block_size: int = 1,
        dense_fallback: bool = False,
        progress: Callable[[int], object] | None = None,
    ) -> RoundResult:
        """Aggregate one round: return  sum_i w_i x_i  over the clients not in ``dropped``.

        ``updates`` maps client id -> 1-D float vector (a sequence is numbered 0..n-1);
        all vectors must share one length and be finite. ``weights`` default to 1.
        ``dropped`` lists clients that go offline during the round: protocols that
        tolerate dropouts (SecAgg) run with them and recover; others just exclude them.
        Values outside [-clip, clip] follow ``out_of_range`` (module docstring).

        Sparse rounds (FedMF's PartText): ``support[cid]`` lists the blocks of
        ``block_size`` entries that may be non-zero in client ``cid``'s vector; the
        server learns these indices (``view.support``). Sparse-capable backends upload
        only those blocks; the others raise unless ``dense_fallback=True``.
        Entries outside the support must be zero (checked).

        ``progress(client_id)`` (optional) is called once per included client as the
        server absorbs its upload (the contract's progress hook, module docstring).
        """
        if progress is not None and not callable(progress):
            raise InvalidInputError(f"progress must be a callable hook(client_id) or None, got {progress!r}")
        hook = _no_progress if progress is None else progress
        vectors = _check_updates(updates)
        w = _check_weights(weights, vectors)
        unknown = set(dropped) - set(vectors)
        if unknown:
            raise InvalidInputError(f"dropped names clients that sent no update: {sorted(unknown)}")
        included = [cid for cid in vectors if cid not in set(dropped)]
        if len(included) < self.min_inputs:
            raise TooFewInputsError(
                f"{self.name}: round has {len(included)} included input(s), fewer than "
                f"min_inputs={self.min_inputs}; refusing to aggregate (it would expose "
                "individual updates)"
            )
        blocks = None if support is None else _check_support(support, vectors, block_size)
        if blocks is not None and not self.sparse_capable and not dense_fallback:
            raise InvalidInputError(
                f"backend {self.name!r} cannot aggregate sparse (support=) rounds: it would upload "
                "every entry; pass dense_fallback=True to run the round densely (no upload saving, "
                "recorded as info['sparse'] = 'dense')"
            )
        vectors, clipped = self._apply_range(vectors)
        if blocks is None:
            result = self._run_round(vectors, w, list(dropped), hook)
            mode = "none"
        elif self.sparse_capable:
            result = self._run_sparse_round(vectors, w, list(dropped), blocks, block_size, dense_fallback, hook)
            mode = "sparse"
        else:
            result = self._run_round(vectors, w, list(dropped), hook)
            mode = "dense"
        if blocks is not None and not result.view.support:  # a backend may report a coarser view
            result.view.support = {cid: blocks[cid] for cid in result.included}
        result.info.update(clipped=clipped + int(result.info.get("clipped", 0)),
                           out_of_range=self.out_of_range, sparse=mode)
        return result

    def _apply_range(self, vectors: dict[int, np.ndarray]) -> tuple[dict[int, np.ndarray], int]:
        """Enforce [-clip, clip] by ``out_of_range``; return the vectors and the clipped count."""
        clipped = 0
        out = {}
        for cid, x in vectors.items():
            out[cid], outside = apply_range(x, self.clip, self.out_of_range, cid)
            clipped += outside
        return out, clipped

    def device_half(self, client_id: int, *, weight: int = 1) -> DeviceHalf:
        """What client ``client_id`` runs in a split round (:mod:`secagg.split`).

        ``weight`` is the integer multiplier the device applies itself (encoding
        backends); backends that weight on the server ignore it.
        """
        raise NotImplementedError(f"backend {self.name!r} has no split (device/server) form yet")

    def server_half(self, clients: Sequence[int], length: int, *,
                    weights: Mapping[int, float] | None = None) -> ServerHalf:
        """What the server runs in a split round of ``clients`` on vectors of ``length``."""
        raise NotImplementedError(f"backend {self.name!r} has no split (device/server) form yet")

    def _run_sparse_round(
        self,
        vectors: dict[int, np.ndarray],
        weights: dict[int, float],
        dropped: list[int],
        support: dict[int, np.ndarray],
        block_size: int,
        dense_fallback: bool,
        progress: Callable[[int], object],
    ) -> RoundResult:
        """Run a sparse round (only called when ``sparse_capable``)."""
        raise NotImplementedError(f"{self.name} declares sparse_capable but has no sparse round")

    @abc.abstractmethod
    def _run_round(
        self, vectors: dict[int, np.ndarray], weights: dict[int, float], dropped: list[int],
        progress: Callable[[int], object],
    ) -> RoundResult:
        """Run the protocol on checked inputs (at least ``min_inputs`` survive, values in range);
        call ``progress(cid)`` once per included client as its upload is absorbed."""


def _no_progress(client_id: int) -> None:
    """The progress hook when the caller passes none."""


def apply_range(x: np.ndarray, clip: float | None, out_of_range: str, cid: int) -> tuple[np.ndarray, int]:
    """One client's vector under the contract's range policy: (vector, clipped count).

    Used by ``aggregate`` for every client and by a device half on its own vector.
    """
    if clip is None:
        return x, 0
    outside = int(np.count_nonzero(np.abs(x) > clip))
    if outside and out_of_range == "raise":
        worst = float(np.max(np.abs(x)))
        raise InvalidInputError(
            f"update of client {cid} has {outside} value(s) outside [-clip, clip] = "
            f"[-{clip:g}, {clip:g}] (largest |x| = {worst:.6g}); scale the update, "
            "raise clip, or construct the backend with out_of_range='clip'"
        )
    return (np.clip(x, -clip, clip) if outside else x), outside


def check_workers(workers: int | None) -> int:
    """The one ``workers`` check: None or 1 run in-process, an integer > 1 uses processes."""
    if workers is None:
        return 1
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise InvalidInputError(f"workers must be an integer >= 1, got {workers!r}")
    return int(workers)


def integer_weights(weights: Mapping[int, float], weight_bits: int = 20) -> tuple[dict[int, int], float]:
    """Map float weights to integers w_int = round(w 2^s), exactly when possible.

    Weights that are all integers (e.g. example counts, or 1.0) are used as they are
    (scale 1, exact). Otherwise they are scaled by 2^s with the largest s that keeps
    max w * 2^s < 2^weight_bits and rounded; ``scale`` = 2^s is returned so that
    sum w_int x / scale approximates sum w x with relative weight error <= 2^-s-1 / w.
    Raises :class:`InvalidInputError` for weights that are not finite and >= 0, when
    2^s is not a finite float64 (subnormal or tiny weights), or when a positive weight
    rounds to 0 (it is too small next to the largest to be represented).
    """
    vals = np.array(list(weights.values()), dtype=np.float64)
    if vals.size == 0 or np.any(~np.isfinite(vals)) or np.any(vals < 0):
        raise InvalidInputError("weights must be finite and >= 0")
    if np.all(vals == np.round(vals)) and vals.max() < 2.0**62:
        return {cid: int(w) for cid, w in weights.items()}, 1.0
    top = float(vals.max())
    shift = weight_bits - math.frexp(top)[1]  # top < 2^e, so top * 2^shift < 2^weight_bits
    if shift > 1023:
        raise InvalidInputError(
            f"weights up to {top!r} are too small to scale to {weight_bits}-bit integers "
            f"(scale 2^{shift} is not a finite float64): rescale the weights"
        )
    scale = 2.0**shift
    out = {cid: int(round(math.ldexp(float(w), shift))) for cid, w in weights.items()}
    lost = [cid for cid, w in weights.items() if w > 0 and out[cid] == 0]
    if lost:
        raise InvalidInputError(
            f"weights of clients {sorted(lost)[:5]} round to 0 at {weight_bits}-bit precision "
            f"next to the largest weight {top!r}: they cannot be represented"
        )
    return out, scale


def _check_updates(updates: Updates) -> dict[int, np.ndarray]:
    if isinstance(updates, Mapping):
        items = list(updates.items())
    else:
        items = list(enumerate(updates))
    if not items:
        raise InvalidInputError("updates is empty: a round needs at least one client update")
    vectors: dict[int, np.ndarray] = {}
    length = None
    for cid, x in items:
        arr = np.asarray(x)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
            raise InvalidInputError(
                f"update of client {cid} must be a 1-D numeric vector, got shape {arr.shape} "
                f"dtype {arr.dtype}"
            )
        if length is None:
            length = arr.shape[0]
        elif arr.shape[0] != length:
            raise InvalidInputError(
                f"update of client {cid} has length {arr.shape[0]}, others have {length}"
            )
        arr = arr.astype(np.float64, copy=False)
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"update of client {cid} contains NaN or inf")
        vectors[int(cid)] = arr
    return vectors


def _check_support(
    support: Mapping[int, np.ndarray], vectors: dict[int, np.ndarray], block_size: int
) -> dict[int, np.ndarray]:
    length = next(iter(vectors.values())).shape[0]
    if not isinstance(block_size, int | np.integer) or block_size < 1 or length % block_size:
        raise InvalidInputError(
            f"block_size must be a positive divisor of the vector length {length}, got {block_size!r}"
        )
    n_blocks = length // block_size
    blocks = {}
    for cid, x in vectors.items():
        if cid not in support:
            raise InvalidInputError(f"support missing for client {cid}")
        idx = np.asarray(support[cid])
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise InvalidInputError(f"support of client {cid} must be a 1-D integer array")
        idx = np.unique(idx)
        if idx.size and (idx[0] < 0 or idx[-1] >= n_blocks):
            raise InvalidInputError(
                f"support of client {cid} has block indices outside 0..{n_blocks - 1}"
            )
        outside = np.ones(n_blocks, bool)
        outside[idx] = False
        if np.any(x.reshape(n_blocks, block_size)[outside]):
            raise InvalidInputError(
                f"update of client {cid} has non-zero entries outside its declared support"
            )
        blocks[cid] = idx
    return blocks


def _check_weights(
    weights: Mapping[int, float] | None, vectors: dict[int, np.ndarray]
) -> dict[int, float]:
    if weights is None:
        return {cid: 1.0 for cid in vectors}
    missing = set(vectors) - set(weights)
    if missing:
        raise InvalidInputError(f"weights missing for clients {sorted(missing)}")
    out = {}
    for cid in vectors:
        w = float(weights[cid])
        if not np.isfinite(w) or w < 0:
            raise InvalidInputError(f"weight of client {cid} must be finite and >= 0, got {w}")
        out[cid] = w
    return out


class PlainBackend(AggregationBackend):
    """No protection: clients send float64 vectors, the server sums them in clear.

    Unbounded by default (``clip=None``); with a ``clip`` it follows ``out_of_range``
    like every backend. Sparse rounds upload only the support blocks.
    """

    name = "plain"
    hides_updates = False
    sparse_capable = True

    def __init__(self, *, min_inputs: int = 2, record_view: bool = False, clip: float | None = None,
                 out_of_range: str = "raise") -> None:
        super().__init__(min_inputs=min_inputs, record_view=record_view, clip=clip,
                         out_of_range=out_of_range)

    def device_half(self, client_id: int, *, weight: int = 1) -> PlainDevice:
        return PlainDevice(client_id, self.clip, self.out_of_range)

    def server_half(self, clients, length, *, weights=None) -> PlainServer:
        return PlainServer(clients, length, weights, min_inputs=self.min_inputs)

    def _run_round(self, vectors, weights, dropped, progress):
        clients = sorted(vectors)
        length = next(iter(vectors.values())).shape[0]
        server = self.server_half(clients, length, weights=weights)
        devices = {c: self.device_half(c) for c in clients}
        run = run_in_process(server, devices, vectors, {PlainServer.stage: dropped}, progress=progress)
        included = run.result.included
        cost = RoundCost(client_seconds={c: run.client_seconds[c] for c in included},
                         server_seconds=run.server_seconds,
                         bytes_up={c: run.bytes_up[c] for c in included},
                         bytes_down={c: run.bytes_down[c] for c in included})
        view = ServerView(aggregate=run.result.aggregate)
        if self.record_view:
            view.per_client = {c: vectors[c] for c in included}
        return RoundResult(aggregate=run.result.aggregate, total_weight=run.result.total_weight,
                           included=included, view=view, cost=cost)

    def _run_sparse_round(self, vectors, weights, dropped, support, block_size, dense_fallback, progress):
        """PartText in clear: each client sends its support blocks and their indices."""
        result = self._run_round(vectors, weights, dropped, progress)
        for cid in result.included:
            result.cost.bytes_up[cid] = support[cid].size * (block_size * 8 + 4) + 8
        return result


_PLAIN_MAGIC = b"PL\x01"
_PLAIN_REQUEST, _PLAIN_VECTOR = 1, 2


class PlainDevice(DeviceHalf):
    """Plain's device half: answers the server's request with its float64 vector.

    Wire (little-endian float64, big-endian header): request ``PL 1 1 || u32 id ||
    u64 length``; reply ``PL 1 2 || u32 id || u64 length || length x f64``.
    """

    def __init__(self, client_id: int, clip: float | None = None, out_of_range: str = "raise") -> None:
        self.client_id, self.clip, self.out_of_range = int(client_id), clip, out_of_range
        self.x: np.ndarray | None = None

    def needs_input(self, message: bytes) -> bool:
        return True

    def set_input(self, x: np.ndarray) -> None:
        x = _check_updates({self.client_id: x})[self.client_id]
        self.x, _ = apply_range(x, self.clip, self.out_of_range, self.client_id)

    def handle(self, message: bytes) -> bytes:
        client, length = _read_plain(message, _PLAIN_REQUEST, "plain request")
        if client != self.client_id:
            raise ProtocolError(f"plain device {self.client_id}: request addressed to client {client}")
        if self.x is None or self.x.size != length:
            raise ProtocolError(f"plain device {self.client_id}: no input of length {length} set")
        return (_PLAIN_MAGIC + bytes([_PLAIN_VECTOR]) + struct.pack(">IQ", client, length)
                + self.x.astype("<f8").tobytes())


class PlainServer(ServerHalf):
    """Plain's server half: one stage, sum_i w_i x_i over the clients that replied."""

    stage = "upload"

    def __init__(self, clients: Sequence[int], length: int, weights: Mapping[int, float] | None = None,
                 *, min_inputs: int = 2) -> None:
        self.clients, self.length = sorted(int(c) for c in clients), int(length)
        self.weights = {c: 1.0 for c in self.clients} if weights is None else dict(weights)
        self.min_inputs = min_inputs
        self.total = np.zeros(self.length)
        self.received: list[int] = []
        self.done = False

    def start(self) -> dict[int, bytes]:
        return {c: _PLAIN_MAGIC + bytes([_PLAIN_REQUEST]) + struct.pack(">IQ", c, self.length)
                for c in self.clients}

    def receive(self, client: int, data: bytes) -> None:
        sender, length = _read_plain(data, _PLAIN_VECTOR, "plain vector", body=True)
        if sender != client or client not in self.weights or client in self.received or self.done:
            raise ProtocolError(f"plain server: unexpected or duplicate vector from client {client}")
        if length != self.length:
            raise ProtocolError(f"plain server: client {client} sent length {length}, expected {self.length}")
        x = np.frombuffer(data, dtype="<f8", offset=16)
        if not np.all(np.isfinite(x)):
            raise InvalidInputError(f"update of client {client} contains NaN or inf")
        self.total += self.weights[client] * x
        self.received.append(client)

    def advance(self) -> dict[int, bytes]:
        if len(self.received) < self.min_inputs:
            raise TooFewInputsError(
                f"plain: round has {len(self.received)} included input(s), fewer than "
                f"min_inputs={self.min_inputs}; refusing to aggregate"
            )
        self.done = True
        return {}

    def result(self) -> SplitResult:
        if not self.done:
            raise ProtocolError("plain server: the round is not complete")
        included = sorted(self.received)
        return SplitResult(self.total, float(sum(self.weights[c] for c in included)), included)


def _read_plain(data: bytes, kind: int, what: str, body: bool = False) -> tuple[int, int]:
    r = Reader(data, what)
    if r.take(3, "magic") != _PLAIN_MAGIC or r.u8("type") != kind:
        raise MalformedMessageError(f"{what}: not a plain-backend message of this kind")
    client, length = r.u32("client"), r.u64("length")
    if body:
        r.take(8 * length, "vector")
    r.done()
    return client, length


_REGISTRY: dict[str, Callable[..., AggregationBackend]] = {}


def register_backend(name: str, factory: Callable[..., AggregationBackend]) -> None:
    """Make ``factory(**options)`` available as ``make_backend(name, **options)``."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    """Names accepted by :func:`make_backend`."""
    _load_builtin_backends()
    return sorted(_REGISTRY)


def make_backend(spec: str | AggregationBackend, **options) -> AggregationBackend:
    """Return a backend: ``spec`` is an instance (returned as is) or a registered name.

    Options the backend does not take, or any option with an instance (already
    configured by its constructor), raise :class:`InvalidInputError`.
    """
    if isinstance(spec, AggregationBackend):
        if options:
            raise InvalidInputError(
                f"make_backend got options {sorted(options)} with an already built {spec.name!r} "
                "backend: pass them to its constructor instead"
            )
        return spec
    _load_builtin_backends()
    try:
        factory = _REGISTRY[spec]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown backend {spec!r}; choose one of {sorted(_REGISTRY)}"
        ) from None
    accepted = backend_options(spec)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InvalidInputError(
            f"backend {spec!r} takes no option(s) {unknown}; its options are {sorted(accepted)}"
        )
    return factory(**options)


def backend_options(name: str) -> set[str]:
    """The keyword options the registered backend ``name`` accepts."""
    _load_builtin_backends()
    factory = _REGISTRY[name]
    accepted: set[str] = set()
    chain = factory.__mro__ if isinstance(factory, type) else (factory,)
    for owner in chain:
        fn = owner.__init__ if isinstance(owner, type) else owner
        if isinstance(owner, type) and "__init__" not in vars(owner):
            continue
        params = inspect.signature(fn).parameters.values()
        accepted |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                     and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return accepted


def _load_builtin_backends() -> None:
    """Import the modules that register the built-in backends (they import this one)."""
    import importlib

    for module in ("secagg.paillier.backend", "secagg.masking.backend"):
        importlib.import_module(module)


register_backend("plain", PlainBackend)
