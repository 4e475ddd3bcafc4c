"""A SecAgg client's protocol state as bytes, between two server messages (no pickle).

A transport that does not keep Python objects alive between messages (Flower keeps a
node's ``Context.state`` as records, a deployed device may restart its process) stores
the client's state after each reply and restores it before the next message. The
snapshot holds the client's secrets (its X25519 private keys, its self-mask seed and
the shares it holds for its neighbours): it stays on the device, never on the wire.

Layout: ``b"SS" || version || state code || fields`` (big-endian, length-prefixed,
parsed with :class:`secagg.wire.Reader`). The input vector and quantizer are not kept:
the vector is used in the very call that masks it. The active variant (identity key,
PKI, signed survivor list) is not snapshotted yet: :func:`dump_client` refuses it.
"""

from __future__ import annotations

import hashlib
import struct

from ..errors import InvalidInputError, MalformedMessageError
from ..wire import Reader
from . import messages as m
from . import primitives as pr
from .client_states import (ClientAdvertiseKeys, ClientContext, ClientMaskedInput, ClientShareKeys,
                            ClientState, ClientUnmasking)

MAGIC = b"SS"
VERSION = 1
#: state code <-> the state class waiting for the next server message
STATES: tuple[type[ClientState], ...] = (ClientAdvertiseKeys, ClientShareKeys, ClientMaskedInput,
                                         ClientUnmasking)


def _blob(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _ids(ids) -> bytes:
    ids = list(ids)
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


def dump_client(ctx: ClientContext, state: ClientState) -> bytes:
    """The bytes of ``ctx`` waiting in ``state`` (refuses the active variant)."""
    if ctx.identity_key is not None or (ctx.config is not None and ctx.config.active):
        raise InvalidInputError("snapshots of the active variant (identity keys, PKI) are not supported")
    code = next((i for i, cls in enumerate(STATES) if type(state) is cls), None)
    if code is None:
        raise InvalidInputError(f"no snapshot for client state {state.name}")
    started = ctx.c_sk is not None
    parts = [MAGIC, bytes([VERSION, code]),
             struct.pack(">IdBI", ctx.client_id, ctx.corrupt_rate, int(ctx.allow_insecure_threshold),
                         ctx.corrupt),
             _blob(ctx.config_bytes),
             _blob(pr.x25519_raw(ctx.c_sk) if started else b""),
             _blob(pr.x25519_raw(ctx.s_sk) if started else b""),
             _blob(ctx.b_seed), _blob(ctx.session), _ids(sorted(ctx.known)), _ids(ctx.neighbours),
             struct.pack(">I", len(ctx.keys))]
    parts += [ctx.keys[v].entry() for v in sorted(ctx.keys)]
    parts.append(struct.pack(">I", len(ctx.enc_keys)))
    parts += [struct.pack(">I", v) + _blob(ctx.enc_keys[v]) for v in sorted(ctx.enc_keys)]
    parts.append(struct.pack(">I", len(ctx.held)))
    parts += [struct.pack(">I", v) + _blob(b) + _blob(s) for v, (b, s) in sorted(ctx.held.items())]
    parts.append(struct.pack(">I", len(ctx.revealed)))
    parts += [struct.pack(">IB", v, kind) for v, kind in sorted(ctx.revealed.items())]
    return b"".join(parts)


def load_client(data: bytes) -> tuple[ClientContext, ClientState]:
    """Inverse of :func:`dump_client`; MalformedMessageError on any damage."""
    r = Reader(data, "client snapshot")
    if r.take(2, "magic") != MAGIC:
        raise MalformedMessageError("client snapshot: bad magic")
    if r.u8("version") != VERSION:
        raise MalformedMessageError("client snapshot: unsupported version")
    code = r.u8("state")
    if code >= len(STATES):
        raise MalformedMessageError(f"client snapshot: unknown state code {code}")
    client_id, corrupt_rate, allow, corrupt = r.unpack(">IdBI", "header")
    ctx = ClientContext(client_id, corrupt_rate=corrupt_rate, allow_insecure_threshold=bool(allow),
                        corrupt=corrupt)
    ctx.config_bytes = r.blob("config")
    if ctx.config_bytes:
        ctx.config = m.RoundConfig.from_bytes(ctx.config_bytes)
        ctx.digest = hashlib.sha256(ctx.config_bytes).digest()
    c_raw, s_raw = r.blob("c_sk"), r.blob("s_sk")
    if c_raw:
        ctx.c_sk, ctx.s_sk = pr.x25519_private(c_raw), pr.x25519_private(s_raw)
        ctx.c_pk, ctx.s_pk = pr.x25519_public(ctx.c_sk), pr.x25519_public(ctx.s_sk)
    ctx.b_seed, ctx.session = r.blob("b_seed"), r.blob("session")
    ctx.known, ctx.neighbours = set(r.ids("known")), r.ids("neighbours")
    for _ in range(r.count("keys", m.ENTRY_BYTES)):
        entry = m.AdvertiseKeys.read_entry(r, ctx.digest)
        ctx.keys[entry.sender] = entry
    for _ in range(r.count("enc_keys", 8)):
        peer = r.u32("peer")
        ctx.enc_keys[peer] = r.blob("enc_key")
    for _ in range(r.count("held", 12)):
        peer = r.u32("peer")
        ctx.held[peer] = (r.blob("b_share"), r.blob("s_share"))
    for _ in range(r.count("revealed", 5)):
        peer = r.u32("peer")
        ctx.revealed[peer] = r.u8("kind")
    r.done()
    if code > 0 and ctx.config is None:
        raise MalformedMessageError("client snapshot: a started client without its round config")
    return ctx, STATES[code]()
