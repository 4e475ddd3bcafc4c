"""The device and server halves of the ``secagg`` / ``secagg+`` backends (:mod:`secagg.split`).

* :class:`MaskingDevice` is a :class:`SecAggClient` that owns its encoding: the
  backend's range policy on its own vector, then ``Quantizer(clip, bits, weight)``
  (CSPRNG stochastic rounding) applied chunk by chunk while masking. It can be frozen
  to bytes between messages (:mod:`.snapshot`) for transports that keep no objects.
* :class:`MaskingServer` is a :class:`SecAggServer` for a :class:`RoundPlan` (the
  backend's (k, t), modulus and integer weights) that decodes the exact modular sum to
  floats: sum_i w_i x_i ~= S step - c W, divided by the weight scale.

``MaskingBackend.aggregate`` runs exactly these halves (driver.run_round with its
optional process pool); :mod:`secagg.flower` carries the same bytes over Flower.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..backend import apply_range
from ..errors import InvalidInputError, MalformedMessageError, ProtocolError, TooFewInputsError
from ..split import DeviceHalf, ServerHalf, SplitResult
from ..wire import Reader
from . import messages as m
from .client_states import SecAggClient
from .quantize import Quantizer, dequantize
from .server_states import SecAggServer, ServerCompleted, ServerMaskedInputCollection
from .snapshot import dump_client, load_client


@dataclass(frozen=True)
class RoundPlan:
    """What the server fixes before a round: the config and the weight encoding."""

    config: m.RoundConfig
    weights: dict[int, int]  #: integer weight per client (w_int)
    scale: float  #: float weights = w_int / scale
    clip: float
    bits: int
    info: dict  #: (k, t), bounds and encoding facts for RoundResult.info
    #: True: each device sets its own integer weight w <= max_weight per round and sends it
    #: as the last word (the config length is the vector length + 1), so the server learns
    #: the survivors' total weight only as part of the masked sum
    weight_word: bool = False


class MaskingDevice(SecAggClient, DeviceHalf):
    """A SecAgg client that encodes its own float vector (see the module docstring)."""

    def __init__(self, client_id: int, *, clip: float, precision_bits: int, weight: int = 1,
                 out_of_range: str = "raise", max_weight: int = 0, **client_options) -> None:
        super().__init__(client_id, **client_options)
        self.quantizer = Quantizer(clip, precision_bits, int(weight))
        self.out_of_range = out_of_range
        self.max_weight = int(max_weight)  #: 0: weight fixed above; else set per round, sent as a word

    def set_weight(self, weight) -> None:
        """This round's integer weight (weight-word rounds only): 0 <= weight <= max_weight."""
        if not self.max_weight:
            raise ProtocolError(f"client {self.client_id}: this device's weight is fixed by the server")
        if (isinstance(weight, bool) or not isinstance(weight, int | float | np.integer)
                or weight != int(weight) or not 0 <= weight <= self.max_weight):
            raise InvalidInputError(
                f"client {self.client_id}: weight must be an integer in [0, {self.max_weight}], got {weight!r}"
            )
        q = self.quantizer
        self.quantizer = Quantizer(q.clip, q.bits, int(weight))

    def needs_input(self, message: bytes) -> bool:
        return m.message_type(message) == m.T_FORWARD

    def set_input(self, x: np.ndarray, quantizer: Quantizer | None = None) -> None:
        if quantizer is None:
            x, _ = apply_range(np.asarray(x, dtype=np.float64), self.quantizer.clip, self.out_of_range,
                               self.client_id)
        if self.max_weight:  # w q(x) then w itself, as words of the round modulus
            cfg = self.ctx.config
            if cfg is None:
                raise ProtocolError(f"client {self.client_id}: a weighted input needs the round config first")
            words = self.quantizer.encode(x, cfg.modulus)
            super().set_input(np.append(words, words.dtype.type(self.quantizer.weight)))
            return
        super().set_input(x, quantizer or self.quantizer)

    def to_bytes(self) -> bytes:
        """The device's state between two messages (secrets included: keep it on the device)."""
        q = self.quantizer
        head = struct.pack(">dBQBQ", q.clip, q.bits, q.weight, int(self.out_of_range == "clip"),
                           self.max_weight)
        return head + dump_client(self.ctx, self.state)

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskingDevice:
        r = Reader(data, "masking device")
        clip, bits, weight, clip_policy, max_weight = r.unpack(">dBQBQ", "encoding")
        if clip_policy > 1:
            raise MalformedMessageError("masking device: bad out_of_range flag")
        ctx, state = load_client(bytes(r.rest()))
        device = cls(ctx.client_id, clip=clip, precision_bits=bits, weight=weight,
                     out_of_range="clip" if clip_policy else "raise", max_weight=max_weight)
        device.ctx, device.state = ctx, state
        return device


class MaskingServer(ServerHalf):
    """The server half: a SecAggServer for ``plan`` and the decoding of its sum."""

    def __init__(self, plan: RoundPlan, *, min_inputs: int = 2, **server_options) -> None:
        self.plan = plan
        self.min_inputs = min_inputs
        self.secagg = SecAggServer(plan.config, **server_options)

    @property
    def stage(self) -> str:
        return self.secagg.stage_name

    def start(self) -> dict[int, bytes]:
        data = self.secagg.start()
        return {c: data for c in self.plan.config.clients}

    def receive(self, client: int, data: bytes) -> None:
        sender = _sender(data)
        if sender != client:
            raise ProtocolError(f"server: a message from client {client} claims to come from {sender}")
        self.secagg.receive(data)

    def advance(self) -> dict[int, bytes]:
        state = self.secagg.state
        if isinstance(state, ServerMaskedInputCollection) and len(state.senders) < self.min_inputs:
            raise TooFewInputsError(
                f"{len(state.senders)} masked inputs, fewer than min_inputs={self.min_inputs}; "
                "refusing to unmask (it would expose individual updates)"
            )
        return self.secagg.advance()

    def result(self) -> SplitResult:
        if not isinstance(self.secagg.state, ServerCompleted):
            raise ProtocolError(f"server: the round is not complete (stage {self.stage})")
        return self.decode(self.secagg.result, list(self.secagg.u3))

    def decode(self, words: np.ndarray, included: list[int]) -> SplitResult:
        """Floats from the exact modular sum of the included clients' weighted words."""
        p = self.plan
        if p.weight_word:
            words, w_total = words[:-1], int(words[-1])
        else:
            w_total = sum(p.weights[c] for c in included)
        aggregate = dequantize(words, p.clip, p.bits, w_total) / p.scale
        return SplitResult(aggregate, w_total / p.scale, included, dict(p.info), words)


def _sender(data: bytes) -> int:
    """The client id a SecAgg client message names (each type has it at a fixed place)."""
    mtype = m.message_type(data)
    offsets = {m.T_ADVERTISE: 4 + 32, m.T_SHARES: 4 + 32, m.T_MASKED: 4 + 32,
               m.T_CONSIST_SIG: 4 + 32, m.T_UNMASK_RESP: 4 + 32}
    if mtype not in offsets or len(data) < offsets[mtype] + 4:
        raise MalformedMessageError(f"message of type {mtype} is not a client reply")
    return struct.unpack_from(">I", data, offsets[mtype])[0]
