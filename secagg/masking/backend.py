"""The ``"secagg"`` (complete graph) and ``"secagg+"`` (Harary graph) aggregation backends.

Each round runs the full protocol in-process (:func:`.driver.run_round`): real keys,
real shares, real masks, every message serialized.

Encoding. Float updates in [-clip, clip] (outside: the contract's ``out_of_range``
policy, :mod:`secagg.backend`) are quantized to ``precision_bits`` bits with CSPRNG
stochastic rounding by the crypto layer's one quantizer (:mod:`secagg.quantize`: step
c / L, L = 2^(bits-1) - 1). A client of integer weight w quantizes w x once, as w
summands (error below one step); integer weights (example counts, 1.0) are exact
multipliers, other weights are scaled by a power of two 2^s (20 significant bits,
``info["weight_scale"]``) and rounded. The modulus is the smallest power of two above
2 L W = (2^bits - 2) W, W the sum of the integer weights of *all* clients, so the
modular sum never wraps, whoever drops.

Dropouts. Clients in ``dropped`` go offline at ``drop_stage`` (default
``"masked_input"``: after sharing their keys, before sending their masked input -- the
worst case of Bonawitz et al. 2017, section 7, which forces the server to reconstruct
their mask keys and remove their pairwise masks). Earlier stages (``"advertise"``,
``"share_keys"``) also exclude them; later stages would count their input and are
therefore not accepted here (use :func:`.driver.run_round` for those).

Threshold guard. The backend refuses (TooFewInputsError) a round in which fewer than
max(min_inputs, t) inputs would be included; the protocol itself aborts with
RoundAbortedError when some client keeps fewer than t live neighbours.

``view.per_client[cid]`` is the masked upload decoded as if it were a quantized value
(uniform noise); ``view.aggregate`` is the unmasked weighted sum. ``result.info`` holds
(k, t), the failure bounds, the modulus and the encoding parameters. Sparse (PartText)
rounds are refused unless the caller passes ``dense_fallback=True`` (masks cover the
whole vector).
"""

from __future__ import annotations

import time

from ..backend import (
    AggregationBackend,
    RoundCost,
    RoundResult,
    ServerView,
    check_workers,
    integer_weights,
    register_backend,
)
from ..errors import InvalidInputError, TooFewInputsError
from .driver import make_config, run_round
from .graph import (GraphParams, complete_parameters, corrupt_count, corrupt_neighbour_bound,
                    find_parameters)
from .halves import MaskingDevice, MaskingServer, RoundPlan
from .primitives import ed25519_keypair
from .quantize import check_quant_params, dequantize, modulus_for

DROP_STAGES = ("advertise", "share_keys", "masked_input")


class MaskingBackend(AggregationBackend):
    """Pairwise-mask secure aggregation (SecAgg; SecAgg+ with ``graph="harary"``).

    Parameters
    ----------
    clip, out_of_range, precision_bits:
        Value range, the contract's policy outside it, and quantization bits.
    graph:
        ``"complete"`` (SecAgg) or ``"harary"`` (SecAgg+ with automatic (k, t)).
    dropout_rate, corrupt_rate, security_bits, correctness_bits:
        Inputs of the (k, t) choice (:func:`.graph.find_parameters`).
    k, t:
        Override the automatic choice (both or neither).
    drop_stage:
        Stage at which ``dropped`` clients go offline (see the module docstring).
    active:
        Run the active-adversary variant (Ed25519-signed keys, ConsistencyCheck), with
        (k, t) chosen for it: 2t - k > c_k (:func:`.graph.check_threshold`).
    allow_insecure_threshold:
        Opt in to t = 1 or t <= the corrupt-neighbour bound (demonstrations only).
    workers:
        Simulate the clients in this many forked processes (the server stays in the
        calling process); 1 runs everything in-process.
    """

    name = "secagg"

    def __init__(self, *, clip: float = 1.0, out_of_range: str = "raise", precision_bits: int = 16,
                 graph: str = "complete",
                 dropout_rate: float = 0.1, corrupt_rate: float = 0.05,
                 security_bits: float = 40.0, correctness_bits: float = 20.0,
                 k: int | None = None, t: int | None = None, drop_stage: str = "masked_input",
                 active: bool = False, workers: int = 1, min_inputs: int = 2,
                 record_view: bool = False, allow_insecure_threshold: bool = False) -> None:
        check_quant_params(clip, precision_bits)
        super().__init__(min_inputs=min_inputs, record_view=record_view, clip=clip,
                         out_of_range=out_of_range)
        if graph not in ("complete", "harary"):
            raise InvalidInputError(f"graph must be 'complete' or 'harary', got {graph!r}")
        if drop_stage not in DROP_STAGES:
            raise InvalidInputError(f"drop_stage must be one of {DROP_STAGES}, got {drop_stage!r}")
        if (k is None) != (t is None):
            raise InvalidInputError("give both k and t, or neither")
        self.precision_bits, self.graph = int(precision_bits), graph
        self.rates = dict(dropout_rate=dropout_rate, corrupt_rate=corrupt_rate)
        self.bounds = dict(security_bits=security_bits, correctness_bits=correctness_bits)
        self.k, self.t = k, t
        self.drop_stage, self.active = drop_stage, active
        self.allow_insecure_threshold = bool(allow_insecure_threshold)
        self.workers = check_workers(workers)

    def parameters(self, n: int) -> GraphParams:
        """The (k, t) this backend uses for n clients."""
        if self.k is not None:
            k = min(self.k, n - 1)
            c_k = corrupt_neighbour_bound(n, k, corrupt_count(n, self.rates["corrupt_rate"]))
            return GraphParams(n, k, self.t, k >= n - 1, float("nan"), float("nan"),
                               self.rates["corrupt_rate"], self.rates["dropout_rate"], c_k,
                               active=self.active)
        if self.graph == "complete":
            return complete_parameters(n, **self.rates, active=self.active)
        return find_parameters(n, **self.rates, **self.bounds, active=self.active)

    def plan(self, clients, length: int, weights=None, *, max_weight: int = 0) -> RoundPlan:
        """The round's config, (k, t) and integer weights (all clients' weights size the modulus).

        ``max_weight`` > 0: each device sets its own integer weight <= max_weight and
        sends it as one extra word (RoundPlan.weight_word); the modulus covers every
        client at max_weight.
        """
        clients = sorted(int(c) for c in clients)
        params = self.parameters(len(clients))
        if max_weight:
            weights, length = {c: int(max_weight) for c in clients}, length + 1
        w_int, scale = integer_weights(weights or {c: 1 for c in clients})
        modulus = modulus_for(max(sum(w_int.values()), 1), self.precision_bits)
        config = make_config(clients, length, modulus, k=params.k, t=params.t, active=self.active,
                             corrupt_rate=self.rates["corrupt_rate"],
                             allow_insecure_threshold=self.allow_insecure_threshold)
        info = {
            "k": params.k, "t": params.t, "complete_graph": params.complete,
            "security_bits": params.security_bits, "correctness_bits": params.correctness_bits,
            "corrupt_rate": params.corrupt_rate, "dropout_rate": params.dropout_rate,
            "modulus": modulus, "modulus_bits": modulus.bit_length() - 1,
            "precision_bits": self.precision_bits, "clip": self.clip, "weight_scale": scale,
            "drop_stage": self.drop_stage, "active": self.active,
            "corrupt_neighbours": params.corrupt_neighbours,
            "tolerated_dropout_rate": params.tolerated_dropout_rate,
        }
        return RoundPlan(config, w_int, scale, self.clip, self.precision_bits, info,
                         weight_word=bool(max_weight))

    def device_half(self, client_id: int, *, weight: int = 1, max_weight: int = 0,
                    identity_key: bytes | None = None,
                    pki: dict[int, bytes] | None = None) -> MaskingDevice:
        """A client of this backend (``max_weight``: it sets its own weight per round;
        active variant: its Ed25519 key and the PKI)."""
        return MaskingDevice(client_id, clip=self.clip, precision_bits=self.precision_bits,
                             weight=weight, out_of_range=self.out_of_range, max_weight=max_weight,
                             identity_key=identity_key,
                             pki=pki, corrupt_rate=self.rates["corrupt_rate"],
                             allow_insecure_threshold=self.allow_insecure_threshold)

    def server_half(self, clients, length, *, weights=None, plan: RoundPlan | None = None,
                    pki: dict[int, bytes] | None = None) -> MaskingServer:
        """The server of a round of ``clients`` (or of a ready ``plan``)."""
        plan = plan or self.plan(clients, length, weights)
        return MaskingServer(plan, min_inputs=self.min_inputs, pki=pki,
                             corrupt_rate=self.rates["corrupt_rate"],
                             allow_insecure_threshold=self.allow_insecure_threshold)

    def _run_round(self, vectors, weights, dropped, progress):
        clients = sorted(vectors)
        length = next(iter(vectors.values())).shape[0]
        t = self.parameters(len(clients)).t
        included = [c for c in clients if c not in set(dropped)]
        if len(included) < max(self.min_inputs, t):
            raise TooFewInputsError(
                f"{self.name}: {len(included)} included inputs, fewer than "
                f"max(min_inputs={self.min_inputs}, t={t}); refusing to aggregate"
            )
        plan = self.plan(clients, length, weights)
        idkeys, pki = {}, None
        if self.active:
            pki = {}
            for c in clients:
                idkeys[c], pki[c] = ed25519_keypair()
        devices = {c: self.device_half(c, weight=plan.weights[c], identity_key=idkeys.get(c), pki=pki)
                   for c in clients}
        server = self.server_half(clients, length, plan=plan, pki=pki)
        run = run_round(vectors, plan.config, clients=devices, server=server.secagg,
                        dropouts={self.drop_stage: set(dropped)}, record_masked=self.record_view,
                        workers=self.workers, corrupt_rate=self.rates["corrupt_rate"],
                        allow_insecure_threshold=self.allow_insecure_threshold, progress=progress)
        t0 = time.perf_counter()
        decoded = server.decode(run.aggregate, list(run.included))
        cost = RoundCost(client_seconds=dict(run.client_seconds),
                         server_seconds=run.server_seconds + time.perf_counter() - t0,
                         bytes_up=run.bytes_up, bytes_down=run.bytes_down)
        view = ServerView(aggregate=decoded.aggregate)
        for c, y in run.masked.items():
            view.per_client[c] = dequantize(y, self.clip, self.precision_bits, plan.weights[c]) / plan.scale
        return RoundResult(aggregate=decoded.aggregate,
                           total_weight=float(sum(weights[c] for c in run.included)),
                           included=list(run.included), view=view, cost=cost, info=decoded.info)


class SecAggPlusBackend(MaskingBackend):
    """SecAgg+: Harary-graph neighbourhoods with automatic (k, t)."""

    name = "secagg+"

    def __init__(self, **options) -> None:
        options.setdefault("graph", "harary")
        super().__init__(**options)


register_backend("secagg", MaskingBackend)
register_backend("secagg+", SecAggPlusBackend)
