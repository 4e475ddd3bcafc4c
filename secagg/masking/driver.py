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

import multiprocessing as mp
import os
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import errors
from ..backend import check_workers
from ..errors import InvalidInputError
from . import messages as m
from . import primitives as pr
from .client_states import SecAggClient
from .graph import DEFAULT_CORRUPT_RATE, GraphParams, check_threshold, corrupt_count, find_parameters
from .quantize import Quantizer
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
                vector: str = "update", active: bool = False, corrupt_rate: float | None = None,
                allow_insecure_threshold: bool = False) -> m.RoundConfig:
    """A RoundConfig with (k, t) given, or from ``params`` (default: find_parameters(n, active=active)).

    The config declares C = ceil(corrupt_rate n) corrupt clients (``corrupt_rate``
    defaults to ``params.corrupt_rate``, else 0.05), and (k, t) must pass
    graph.check_threshold for it: InsecureParameterError otherwise (t = 1 or t <= c_k
    only with ``allow_insecure_threshold=True``; the active bound 2t - k > c_k always).
    """
    n = len(clients)
    if k is None or t is None:
        params = params or find_parameters(n, active=active, **(
            {} if corrupt_rate is None else {"corrupt_rate": corrupt_rate}))
        k, t = min(params.k, n - 1), params.t
    if corrupt_rate is None:
        corrupt_rate = params.corrupt_rate if params is not None else DEFAULT_CORRUPT_RATE
    corrupt = corrupt_count(n, corrupt_rate)
    check_threshold(n, int(k), int(t), corrupt, active=active,
                    allow_insecure_threshold=allow_insecure_threshold)
    return m.RoundConfig(round_id, os.urandom(16), sorted(clients), vector, int(length),
                         int(modulus), int(k), int(t), active, corrupt)


def run_round(inputs: Mapping[int, np.ndarray], config: m.RoundConfig, *,
              quantizers: Mapping[int, Quantizer] | None = None,
              dropouts: Mapping[str, set[int] | list[int]] | None = None,
              record_masked: bool = False, workers: int = 1,
              clock: Callable[[], float] = time.perf_counter,
              corrupt_rate: float = DEFAULT_CORRUPT_RATE,
              allow_insecure_threshold: bool = False,
              clients: Mapping[int, SecAggClient] | None = None,
              server: SecAggServer | None = None,
              progress: Callable[[int], object] | None = None) -> DriverResult:
    """Run one SecAgg(+) round in-process and return the aggregate, times and bytes.

    ``inputs`` are quantized words, or float vectors for the clients that have a
    ``quantizers`` entry (each quantizes its own vector while masking it).

    ``workers > 1`` runs the simulated clients in that many forked processes (each
    client lives in one process for the whole round; messages cross as bytes). The
    server stays in this process. Per-client seconds are measured where the client runs.

    ``corrupt_rate`` is the clients' own floor on the corrupt fraction (active variant)
    and ``allow_insecure_threshold`` their (and the server's) opt-in to t = 1 or t <= c_k.

    ``clients`` and ``server`` run ready-made halves (a backend's devices, which encode
    their own input, and its server for ``config``; active variant: with their keys and
    PKI) instead of building plain ones here.

    ``progress(c)`` (optional) is called in this process once the server has received
    client ``c``'s masked input (the upload that puts it in U3).
    """
    dropouts = {s: set(v) for s, v in (dropouts or {}).items()}
    bad = set(dropouts) - set(STAGES)
    if bad:
        raise InvalidInputError(f"unknown dropout stages {sorted(bad)}; use {STAGES}")
    if set(inputs) != set(config.clients):
        raise InvalidInputError("inputs must have exactly one vector per client of the config")
    check_workers(workers)
    if server is not None and server.ctx.config_bytes != config.to_bytes():
        raise InvalidInputError("run_round: the server was built for another RoundConfig")
    if (clients is None) != (server is None):
        raise InvalidInputError("run_round: give ready-made clients and their server together, or neither")
    if clients is None:
        pki = None
        idkeys: dict[int, bytes] = {}
        if config.active:
            pki = {}
            for c in config.clients:
                idkeys[c], pki[c] = pr.ed25519_keypair()
        clients = {c: SecAggClient(c, identity_key=idkeys.get(c), pki=pki, corrupt_rate=corrupt_rate,
                                   allow_insecure_threshold=allow_insecure_threshold)
                   for c in config.clients}
        server = SecAggServer(config, pki=pki, clock=clock, corrupt_rate=corrupt_rate,
                              allow_insecure_threshold=allow_insecure_threshold)
    elif set(clients) != set(config.clients):
        raise InvalidInputError("run_round: ready-made clients must be one per client of the config")
    res = DriverResult(np.zeros(0), [], {c: 0.0 for c in clients}, 0.0,
                       {c: 0 for c in clients}, {c: 0 for c in clients}, config=config)
    for c, x in inputs.items():
        t0 = clock()
        clients[c].set_input(x, (quantizers or {}).get(c))
        res.client_seconds[c] += clock() - t0
    pool = (_Pool(clients, workers, clock) if workers > 1 and len(clients) > 1
            else _Local(clients, clock))
    try:
        outbox = {c: server.start() for c in clients}
        gone: set[int] = set()
        for stage in STAGES:
            if stage == "consistency" and not config.active:
                continue
            gone |= dropouts.get(stage, set())
            for c, data in outbox.items():
                res.bytes_down[c] += len(data)
            for c, seconds, reply in pool.handle({c: d for c, d in outbox.items() if c not in gone}):
                res.client_seconds[c] += seconds
                res.bytes_up[c] += len(reply)
                server.receive(reply)
                if stage == "masked_input":
                    if record_masked:
                        res.masked[c] = server.last_masked
                    if progress is not None:
                        progress(c)
            outbox = server.advance()
    finally:
        pool.close()
    res.aggregate = server.result
    res.included = list(server.u3)
    res.server_seconds = server.seconds
    return res


def _run_clients(clients: Mapping[int, SecAggClient], batch: Mapping[int, bytes], clock):
    """Yield (client, seconds, reply) one client at a time."""
    for c, data in batch.items():
        t0 = clock()
        reply = clients[c].handle(data)
        yield c, clock() - t0, reply


class _Local:
    """Clients in this process; each reply reaches the server before the next client
    runs, so a round holds one masked vector at a time (as a server reading a socket)."""

    def __init__(self, clients, clock):
        self.clients, self.clock = clients, clock

    def handle(self, batch):
        return _run_clients(self.clients, batch, self.clock)

    def close(self):
        pass


# ------------------------------------------------------------------ worker processes
# Frames between the driver and its workers are our own bytes (no pickle):
# u32 count, then per item u32 client id, f64 seconds, u32 length, payload.
def _frame(items) -> bytes:
    parts = [struct.pack(">I", len(items))]
    for c, sec, data in items:
        parts.append(struct.pack(">IdI", c, sec, len(data)))
        parts.append(data)
    return b"".join(parts)


def _unframe(buf: bytes):
    (n,), pos, out = struct.unpack_from(">I", buf), 4, []
    for _ in range(n):
        c, sec, size = struct.unpack_from(">IdI", buf, pos)
        pos += 16
        out.append((c, sec, buf[pos:pos + size]))
        pos += size
    return out


def _worker(conn, clients, inherited, clock) -> None:
    for other in inherited:  # parent-side pipe ends copied by fork: close, or EOF never comes
        other.close()
    while True:
        try:
            buf = conn.recv_bytes()
        except EOFError:
            return
        try:
            items = list(_run_clients(clients, {c: d for c, _, d in _unframe(buf)}, clock))
            conn.send_bytes(b"\x00" + _frame(items))
        except Exception as exc:  # reported to the driver, which re-raises it
            conn.send_bytes(b"\x01" + f"{type(exc).__name__}\n{exc}".encode())


class _Pool:
    """Clients partitioned over forked worker processes for the whole round."""

    def __init__(self, clients, workers, clock):
        ctx = mp.get_context("fork")
        ids = sorted(clients)
        self.owner, self.conns, self.procs = {}, [], []
        for w in range(min(workers, len(ids))):
            group = {c: clients[c] for c in ids[w::workers]}
            self.owner.update({c: w for c in group})
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, group, self.conns + [parent], clock),
                               daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def handle(self, batch):
        parts = [[] for _ in self.conns]
        for c, data in batch.items():
            parts[self.owner[c]].append((c, 0.0, data))
        for conn, items in zip(self.conns, parts):
            conn.send_bytes(_frame(items))
        out = []
        for conn in self.conns:
            buf = conn.recv_bytes()
            if buf[:1] == b"\x01":
                name, _, msg = buf[1:].decode().partition("\n")
                raise getattr(errors, name, errors.SecaggError)(msg)
            out.extend(_unframe(buf[1:]))
        return out

    def close(self):
        for conn in self.conns:
            conn.close()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
