"""A backend split across machines: the device half and the server half of one round.

``AggregationBackend.aggregate`` runs every client and the server in one call. A real
deployment (Flower's simulation or SuperNodes, any message bus) needs the two sides
apart, exchanging bytes:

* a :class:`DeviceHalf` runs on one client, on its own vector only: it answers each
  server message with bytes (``handle``) and takes its vector when it asks for it
  (``needs_input(message)`` is True for the message that consumes the input, so a
  transport can train or compute the update only when the protocol needs it);
* a :class:`ServerHalf` runs on the server, on what it receives: ``start()`` gives the
  first message per client, ``receive(client, bytes)`` takes one reply, ``advance()``
  closes the stage and gives the next messages ({} when the round is over),
  ``result()`` the decoded :class:`SplitResult`.

A client that does not answer a stage is simply never passed to ``receive``: it is a
dropout (the protocol decides whether the round survives it). The same two halves
drive the in-process ``aggregate`` (:func:`run_in_process`, or the masking driver with
its process pool), :mod:`secagg.flower` and any other transport, so there is one
implementation per backend. Everything that crosses is ``bytes``: no pickle.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SplitResult:
    """What the server half decodes at the end of a round."""

    #: sum_i w_i x_i over ``included`` (float64); None where the server never learns it
    #: (packed Paillier: only the clients decrypt, :mod:`secagg.paillier.halves`)
    aggregate: np.ndarray | None
    total_weight: float  #: sum of the included weights
    included: list[int]  #: clients whose vector is in the sum
    info: dict = field(default_factory=dict)  #: backend facts (k, t, modulus, ...)
    words: np.ndarray | None = None  #: the exact integer sum before decoding (encoding backends)


class DeviceHalf(abc.ABC):
    """What one client runs: its own vector in, bytes for the server out."""

    client_id: int

    @abc.abstractmethod
    def needs_input(self, message: bytes) -> bool:
        """True when ``message`` is the one whose reply carries the (protected) vector."""

    @abc.abstractmethod
    def set_input(self, x: np.ndarray) -> None:
        """This client's vector for the round (checked against the backend's range policy)."""

    @abc.abstractmethod
    def handle(self, message: bytes) -> bytes | bytearray | None:
        """Process one server message and return the reply bytes."""


class ServerHalf(abc.ABC):
    """What the server runs on the messages it receives."""

    #: the name of the stage whose replies ``receive`` expects now
    stage: str

    @abc.abstractmethod
    def start(self) -> dict[int, bytes]:
        """The first message for each client of the round."""

    @abc.abstractmethod
    def receive(self, client: int, data: bytes) -> None:
        """Validate and absorb one reply of the current stage (errors raise, state unchanged)."""

    @abc.abstractmethod
    def advance(self) -> dict[int, bytes]:
        """Close the stage (non-repliers are dropouts); the next messages, {} when done."""

    @abc.abstractmethod
    def result(self) -> SplitResult:
        """The decoded aggregate, once :meth:`advance` returned {}."""


@dataclass
class InProcessRun:
    """A split round driven in one process, with what each side spent."""

    result: SplitResult
    client_seconds: dict[int, float]
    server_seconds: float
    bytes_up: dict[int, int]
    bytes_down: dict[int, int]


def run_in_process(server: ServerHalf, devices: Mapping[int, DeviceHalf],
                   inputs: Mapping[int, np.ndarray],
                   dropped: Mapping[str, Collection[int]] | None = None, *,
                   progress: Callable[[int], object] | None = None) -> InProcessRun:
    """Drive one round of ``server`` and ``devices`` in this process, counting bytes.

    ``dropped[stage]`` lists clients that stop answering from the server stage named
    ``stage`` on (``ServerHalf.stage``). Each device gets its vector when it first
    ``needs_input``; ``progress(c)`` (optional) is called once the server has received
    the reply that carries client ``c``'s (protected) vector.
    """
    dropped = {stage: set(ids) for stage, ids in (dropped or {}).items()}
    clock = time.perf_counter
    seconds = {c: 0.0 for c in devices}
    up = {c: 0 for c in devices}
    down = {c: 0 for c in devices}
    server_seconds = 0.0
    gone: set[int] = set()
    t0 = clock()
    outbox = server.start()
    server_seconds += clock() - t0
    while outbox:
        gone |= dropped.get(server.stage, set())
        for c, message in outbox.items():
            down[c] += len(message)
            if c in gone:
                continue
            t0 = clock()
            carries_input = devices[c].needs_input(message)
            if carries_input:
                devices[c].set_input(inputs[c])
            reply = devices[c].handle(message)
            seconds[c] += clock() - t0
            if reply is None:
                continue
            up[c] += len(reply)
            t0 = clock()
            server.receive(c, bytes(reply))
            server_seconds += clock() - t0
            if carries_input and progress is not None:
                progress(c)
        t0 = clock()
        outbox = server.advance()
        server_seconds += clock() - t0
    t0 = clock()
    result = server.result()
    server_seconds += clock() - t0
    return InProcessRun(result, seconds, server_seconds, up, down)
