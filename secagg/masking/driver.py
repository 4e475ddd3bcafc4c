"""In-process simulation: n clients and a server exchanging bytes, dropouts at any stage.

Every message really is serialized and parsed, so bytes on the wire are counted
exactly and the run exercises the same code a networked deployment would.

Dropout stages (a client in ``dropouts[stage]`` stops answering from that round on):

* ``"advertise"``: never advertises keys (not in U1);
* ``"share_keys"``: advertised keys, never sends shares (in U1, not U2);
* ``"masked_input"``: shared keys, never sends its masked input (U2 minus U3: its pairwise
  masks are removed with its reconstructed mask key);
* ``"consistency"``: sent its masked input, never signs (active variant; its input
  counts);
* ``"unmasking"``: sent its masked input, never sends shares (its input counts).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError
from . import messages as m
from . import primitives as pr
from .client_states import SecAggClient
from .graph import GraphParams, find_parameters
from .server_states import SecAggServer

STAGES = ("advertise", "share_keys", "masked_input", "consistency", "unmasking")


@dataclass
class DriverResult:
    """Outcome of one simulated round."""

    aggregate: np.ndarray  #: sum mod R of the inputs of the clients in ``included``
    included: list[int]  #: U3: clients whose input is in the sum
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    masked: dict[int, np.ndarray] = field(default_factory=dict)  #: y_u as the server saw it
    config: m.RoundConfig | None = None


def make_config(clients: list[int], length: int, modulus: int, *, k: int | None = None,
                t: int | None = None, params: GraphParams | None = None, round_id: int = 0,
                vector: str = "update", active: bool = False) -> m.RoundConfig:
    """A RoundConfig with (k, t) given, or from ``params`` (default: find_parameters(n))."""
    n = len(clients)
    if k is None or t is None:
        params = params or find_parameters(n)
        k, t = min(params.k, n - 1), params.t
    return m.RoundConfig(round_id, os.urandom(16), sorted(clients), vector, int(length),
                         int(modulus), int(k), int(t), active)


def run_round(inputs: Mapping[int, np.ndarray], config: m.RoundConfig, *,
              dropouts: Mapping[str, set[int] | list[int]] | None = None,
              record_masked: bool = False) -> DriverResult:
    """Run one SecAgg(+) round in-process and return the aggregate, times and bytes."""
    dropouts = {s: set(v) for s, v in (dropouts or {}).items()}
    bad = set(dropouts) - set(STAGES)
    if bad:
        raise InvalidInputError(f"unknown dropout stages {sorted(bad)}; use {STAGES}")
    if set(inputs) != set(config.clients):
        raise InvalidInputError("inputs must have exactly one vector per client of the config")
    pki = None
    idkeys: dict[int, bytes] = {}
    if config.active:
        pki = {}
        for c in config.clients:
            idkeys[c], pki[c] = pr.ed25519_keypair()
    clients = {c: SecAggClient(c, identity_key=idkeys.get(c), pki=pki) for c in config.clients}
    res = DriverResult(np.zeros(0), [], {c: 0.0 for c in clients}, 0.0,
                       {c: 0 for c in clients}, {c: 0 for c in clients}, config=config)
    for c, x in inputs.items():
        clients[c].set_input(x)
    server = SecAggServer(config, pki=pki)
    outbox = {c: server.start() for c in clients}
    gone: set[int] = set()
    for stage in STAGES:
        if stage == "consistency" and not config.active:
            continue
        gone |= dropouts.get(stage, set())
        for c, data in outbox.items():
            res.bytes_down[c] += len(data)
            if c in gone:
                continue
            t0 = time.perf_counter()
            reply = clients[c].handle(data)
            res.client_seconds[c] += time.perf_counter() - t0
            res.bytes_up[c] += len(reply)
            server.receive(reply)
            if record_masked and stage == "masked_input":
                res.masked[c] = server.last_masked
        outbox = server.advance()
    res.aggregate = server.result
    res.included = list(server.u3)
    res.server_seconds = server.seconds
    return res
