"""Server state machine of SecAgg / SecAgg+ (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020).

One state per round, mirroring the client (and Google fcp ``secagg_server_r*``):

* :class:`ServerAdvertiseKeys` (round 0): collect the key pairs (c, s) of U1, check the
  signatures in the active variant; on close derive the session id from every key and
  the SecAgg+ neighbourhoods, and broadcast the KeyList.
* :class:`ServerShareKeys` (round 1): collect the encrypted shares of U2 (one per
  neighbour) and forward each to its recipient.
* :class:`ServerMaskedInputCollection` (round 2): add each masked input y_u of U3 into
  the running sum as it arrives (the vectors are not kept).
* :class:`ServerConsistencyCheck` (round 3, active variant): collect signatures over U3.
* :class:`ServerUnmasking` (round 4): collect the shares; for u in U3 reconstruct b_u,
  check it against u's advertised commitment, and subtract PRG(b_u); for v in U2 minus
  U3 reconstruct s_v^SK, check it against v's advertised public key and cancel
  sign(u, v) PRG(KA(s_v, s_u)) for every neighbour u in U3, leaving
  sum_{u in U3} x_u mod R. A secret that fails its check is rebuilt from the shares
  beyond t (shamir.reconstruct_verified), and the holders of wrong shares are named in
  ``SecAggServer.faulty``; if no t shares agree with the check the round aborts, so a
  tampered share never becomes a wrong sum.

:class:`SecAggServer` drives them: :meth:`~SecAggServer.receive` hands a message to the
current state, :meth:`~SecAggServer.advance` closes the round (in a deployment: on a
timeout or when everybody answered) and returns the messages of the next one. The
sets U1 ⊇ U2 ⊇ U3 ⊇ U4 are the clients that answered rounds 0, 1, 2 and 3/4. A round
aborts with RoundAbortedError -- revealing nothing, since only masked data has been
seen -- when some client that must be unmasked has fewer than t neighbours left to hold
its shares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ProtocolError, RoundAbortedError
from . import messages as m
from . import primitives as pr
from . import shamir, vectors
from .client_states import apply_masks, mask_key_for
from .graph import DEFAULT_CORRUPT_RATE, check_threshold, corrupt_count, neighbours


@dataclass
class ServerContext:
    """What the server keeps across rounds."""

    config: m.RoundConfig
    pki: dict[int, bytes] | None
    config_bytes: bytes = b""
    digest: bytes = b""
    session: bytes = b""
    keys: dict[int, m.AdvertiseKeys] = field(default_factory=dict)  #: U1's advertised keys
    nbrs: dict[int, list[int]] = field(default_factory=dict)
    index: dict[int, int] = field(default_factory=dict)  #: client id -> Shamir x-coordinate
    u2: list[int] = field(default_factory=list)
    u3: list[int] = field(default_factory=list)
    acc: np.ndarray | None = None  #: running sum of the masked inputs
    signatures: dict[int, bytes] = field(default_factory=dict)
    last_masked: m.MaskedInput | None = None
    result: np.ndarray | None = None
    faulty: dict[int, list[int]] = field(default_factory=dict)  #: holder -> owners of its wrong shares

    def sender_ok(self, sender: int, allowed, seen, what: str) -> None:
        if sender not in self.config.clients:
            raise ProtocolError(f"server: {what} from unknown client id {sender}")
        if sender not in allowed:
            raise ProtocolError(f"server: {what} from client {sender}, which is not in this round's set")
        if sender in seen:
            raise ProtocolError(f"server: duplicate {what} from client {sender}")

    def session_ok(self, session: bytes, sender: int) -> None:
        if session != self.session:
            raise ProtocolError(f"server: message from client {sender} carries a wrong session id")

    def need(self, holders: dict[int, list[int]], pool: set[int], when: str) -> None:
        """Abort unless ``pool`` has >= t clients and every client in ``holders`` has >= t
        neighbours in it (Bonawitz et al.: abort when |U_i| < t)."""
        t = self.config.t
        if len(pool) < t or not pool:
            raise RoundAbortedError(
                f"round aborted {when}: {len(pool)} clients left, fewer than t={t}; nothing was revealed"
            )
        for u, nb in holders.items():
            alive = sum(1 for v in nb if v in pool)
            if alive < t:
                raise RoundAbortedError(
                    f"round aborted {when}: client {u} has {alive} live neighbours, fewer than "
                    f"t={t}; nothing was revealed"
                )

    def holders(self) -> dict[int, list[int]]:
        """U2's neighbourhoods: the clients whose secrets may have to be reconstructed."""
        return {u: self.nbrs[u] for u in self.u2}


class ServerState:
    """One server round: accept messages of type ``expects``, then close."""

    name = ""
    expects = -1

    def receive(self, ctx: ServerContext, data: bytes) -> None:
        raise NotImplementedError

    def close(self, ctx: ServerContext) -> tuple[ServerState, dict[int, bytes]]:
        raise NotImplementedError


class ServerAdvertiseKeys(ServerState):
    name = "AdvertiseKeys"
    expects = m.T_ADVERTISE

    def __init__(self) -> None:
        self.keys: dict[int, m.AdvertiseKeys] = {}

    def receive(self, ctx, data):
        msg = m.AdvertiseKeys.from_bytes(data)
        if msg.config_digest != ctx.digest:
            raise ProtocolError(f"server: keys of client {msg.sender} are for another round config")
        ctx.sender_ok(msg.sender, ctx.config.clients, self.keys, "AdvertiseKeys")
        if ctx.config.active:
            pub = ctx.pki.get(msg.sender)
            if pub is None or not pr.ed25519_verify(pub, msg.signature, msg.signed_bytes()):
                raise ProtocolError(f"server: bad signature on the keys of client {msg.sender}")
        self.keys[msg.sender] = msg

    def close(self, ctx):
        u1 = sorted(self.keys)
        if len(u1) < max(ctx.config.t + 1, 2):
            raise RoundAbortedError(f"round aborted: {len(u1)} clients advertised keys, t={ctx.config.t}")
        ctx.keys = self.keys
        key_list = m.KeyList(ctx.digest, [self.keys[c] for c in u1])
        ctx.session = pr.session_id(ctx.config_bytes, key_list.key_bytes())
        ctx.index = {c: i + 1 for i, c in enumerate(u1)}
        ctx.nbrs = neighbours(ctx.session, u1, ctx.config.k)
        ctx.need(ctx.nbrs, set(u1), "after AdvertiseKeys")
        data = key_list.to_bytes()
        return ServerShareKeys(), {c: data for c in u1}


class ServerShareKeys(ServerState):
    name = "ShareKeys"
    expects = m.T_SHARES

    def __init__(self) -> None:
        self.shares: dict[int, m.EncryptedShares] = {}

    def receive(self, ctx, data):
        msg = m.EncryptedShares.from_bytes(data)
        ctx.sender_ok(msg.client, ctx.keys, self.shares, "EncryptedShares")
        ctx.session_ok(msg.session, msg.client)
        if sorted(p for p, _ in msg.items) != ctx.nbrs[msg.client]:
            raise ProtocolError(f"server: client {msg.client} did not send one share to each neighbour")
        self.shares[msg.client] = msg

    def close(self, ctx):
        ctx.u2 = sorted(self.shares)
        u2 = set(ctx.u2)
        ctx.need(ctx.holders(), u2, "after ShareKeys")
        inbox: dict[int, list[tuple[int, bytes]]] = {v: [] for v in ctx.u2}
        for src in ctx.u2:
            for dst, blob in self.shares[src].items:
                if dst in u2:
                    inbox[dst].append((src, blob))
        ctx.acc = np.zeros(ctx.config.length, dtype=pr.word_dtype(ctx.config.modulus))
        return ServerMaskedInputCollection(), {
            v: m.ForwardedShares(ctx.session, v, inbox[v]).to_bytes() for v in ctx.u2
        }


class ServerMaskedInputCollection(ServerState):
    name = "MaskedInputCollection"
    expects = m.T_MASKED

    def __init__(self) -> None:
        self.senders: set[int] = set()

    def receive(self, ctx, data):
        msg = m.MaskedInput.from_bytes(data)
        ctx.sender_ok(msg.sender, set(ctx.u2), self.senders, "MaskedInput")
        ctx.session_ok(msg.session, msg.sender)
        if msg.length != ctx.config.length or msg.modulus != ctx.config.modulus:
            raise ProtocolError(f"server: masked input of client {msg.sender} has the wrong length or modulus")
        vectors.unpack_add(ctx.acc, msg.packed, msg.length, msg.modulus)
        self.senders.add(msg.sender)
        ctx.last_masked = msg

    def close(self, ctx):
        ctx.u3 = sorted(self.senders)
        ctx.need(ctx.holders(), set(ctx.u3), "after MaskedInputCollection")
        if ctx.config.active:
            data = m.ConsistencyRequest(ctx.session, ctx.u3).to_bytes()
            return ServerConsistencyCheck(), {c: data for c in ctx.u3}
        data = m.UnmaskRequest(ctx.session, ctx.u3).to_bytes()
        return ServerUnmasking(set(ctx.u3)), {c: data for c in ctx.u3}


class ServerConsistencyCheck(ServerState):
    name = "ConsistencyCheck"
    expects = m.T_CONSIST_SIG

    def receive(self, ctx, data):
        msg = m.ConsistencySignature.from_bytes(data)
        ctx.sender_ok(msg.sender, set(ctx.u3), ctx.signatures, "ConsistencySignature")
        ctx.session_ok(msg.session, msg.sender)
        if not pr.ed25519_verify(ctx.pki.get(msg.sender, b""), msg.signature,
                                 m.consistency_bytes(ctx.session, ctx.u3)):
            raise ProtocolError(f"server: bad consistency signature from client {msg.sender}")
        ctx.signatures[msg.sender] = msg.signature

    def close(self, ctx):
        signers = sorted(ctx.signatures)
        ctx.need(ctx.holders(), set(signers), "after ConsistencyCheck")
        data = m.UnmaskRequest(ctx.session, ctx.u3, [(c, ctx.signatures[c]) for c in signers]).to_bytes()
        return ServerUnmasking(set(signers)), {c: data for c in signers}


class ServerUnmasking(ServerState):
    name = "Unmasking"
    expects = m.T_UNMASK_RESP

    def __init__(self, askable: set[int]) -> None:
        self.askable = askable  #: U3, or the signers of U3 in the active variant
        self.responses: dict[int, m.UnmaskResponse] = {}

    def receive(self, ctx, data):
        msg = m.UnmaskResponse.from_bytes(data)
        ctx.sender_ok(msg.sender, self.askable, self.responses, "UnmaskResponse")
        ctx.session_ok(msg.session, msg.sender)
        alive = set(ctx.u3)
        peers = set(ctx.nbrs[msg.sender]) & set(ctx.u2)
        for owner, kind, _ in msg.shares:
            if owner not in peers:
                raise ProtocolError(f"server: client {msg.sender} sent a share of non-neighbour {owner}")
            want = m.SHARE_SELF_SEED if owner in alive else m.SHARE_MASK_KEY
            if kind != want:
                raise ProtocolError(f"server: client {msg.sender} sent the wrong kind of share for {owner}")
        elements = np.frombuffer(b"".join(s for _, _, s in msg.shares), ">u4")
        if elements.size and int(elements.max()) >= shamir.PRIME:
            raise ProtocolError(f"server: client {msg.sender} sent a share that is not a field element")
        self.responses[msg.sender] = msg

    def close(self, ctx):
        secrets = self._reconstruct(ctx)
        cfg, alive = ctx.config, set(ctx.u3)
        keys = [mask_key_for(secrets[u], label=pr.LABEL_SELF_MASK, session=ctx.session, cfg=cfg,
                             party=(u, u)) for u in ctx.u3]
        signs = [-1] * len(keys)
        for v in ctx.u2:
            if v in alive:
                continue
            s_sk = pr.x25519_private(secrets[v])
            for u in ctx.nbrs[v]:
                if u not in alive:
                    continue
                shared = pr.x25519_shared(s_sk, ctx.keys[u].s_pk)
                keys.append(mask_key_for(shared, label=pr.LABEL_PAIR_MASK, session=ctx.session,
                                         cfg=cfg, party=(min(u, v), max(u, v))))
                # u added sign(u, v) * mask with sign = +1 iff u < v: remove it
                signs.append(-1 if u < v else 1)
        apply_masks(ctx.acc, keys, signs, cfg)
        ctx.result = vectors.reduce(ctx.acc, cfg.modulus)
        return ServerCompleted(), {}

    def _reconstruct(self, ctx) -> dict[int, bytes]:
        """b_u for u in U3, s_u^SK for u in U2 minus U3, each from t shares (Shamir) and
        accepted only if it matches u's commitment (b_u) or public key (s_u^SK)."""
        buckets: dict[int, list[tuple[int, bytes]]] = {u: [] for u in ctx.u2}
        holder_at = {x: c for c, x in ctx.index.items()}
        for holder in sorted(self.responses):
            for owner, _, share in self.responses[holder].shares:
                buckets[owner].append((ctx.index[holder], share))
        t, alive = ctx.config.t, set(ctx.u3)
        for owner, got in buckets.items():
            if len(got) < t:
                raise RoundAbortedError(
                    f"round aborted in Unmasking: {len(got)} shares of client {owner}'s secret, "
                    f"fewer than t={t}; nothing was revealed"
                )
        secrets = {}
        for owner, got in buckets.items():
            if ctx.faulty:  # holders already caught go last, so later secrets need no correction
                got.sort(key=lambda item: holder_at[item[0]] in ctx.faulty)
            rows = np.frombuffer(b"".join(s for _, s in got), dtype=">u4").reshape(len(got), -1)
            check = _seed_check(ctx, owner) if owner in alive else _key_check(ctx, owner)
            try:
                secrets[owner], bad = shamir.reconstruct_verified([x for x, _ in got], rows, t, check)
            except RoundAbortedError as exc:
                raise RoundAbortedError(
                    f"round aborted in Unmasking: client {owner}'s "
                    f"{'self-mask seed' if owner in alive else 'mask key'} cannot be rebuilt "
                    f"from the {len(got)} shares received ({exc}); no sum was output"
                ) from None
            for x in bad:
                ctx.faulty.setdefault(holder_at[x], []).append(owner)
        return secrets


def _seed_check(ctx: ServerContext, owner: int):
    commit = ctx.keys[owner].seed_commit
    return lambda seed: pr.seed_commitment(ctx.digest, owner, seed) == commit


def _key_check(ctx: ServerContext, owner: int):
    public = ctx.keys[owner].s_pk
    return lambda raw: pr.x25519_public(pr.x25519_private(raw)) == public


class ServerCompleted(ServerState):
    name = "Completed"


class SecAggServer:
    """Server side of one aggregation round, driving the per-round states above."""

    def __init__(self, config: m.RoundConfig, *, pki: dict[int, bytes] | None = None,
                 clock: Callable[[], float] = time.perf_counter, corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                 allow_insecure_threshold: bool = False) -> None:
        pr.check_modulus(config.modulus)
        n = len(config.clients)  # active variant: C at least the server's own corrupt_rate, as a client does
        corrupt = max(config.corrupt, corrupt_count(n, corrupt_rate)) if config.active else config.corrupt
        check_threshold(n, config.k, config.t, corrupt, active=config.active,
                        allow_insecure_threshold=allow_insecure_threshold)
        if config.active and pki is None:
            raise ProtocolError("active variant needs the PKI (client id -> Ed25519 public key)")
        self.ctx = ServerContext(config, pki, config.to_bytes(), config.digest())
        self.state: ServerState = ServerAdvertiseKeys()
        self.seconds = 0.0  #: server time spent in receive/advance, measured with ``clock``
        self.clock = clock

    @property
    def stage_name(self) -> str:
        return self.state.name

    @property
    def session(self) -> bytes:
        return self.ctx.session

    @property
    def u3(self) -> list[int]:
        """The clients whose inputs are in the sum."""
        return self.ctx.u3

    @property
    def faulty(self) -> dict[int, list[int]]:
        """Holders caught returning wrong shares -> the owners whose shares from them were
        found wrong (once caught, a holder's shares are used last, so the list may be short)."""
        return self.ctx.faulty

    @property
    def result(self) -> np.ndarray | None:
        """sum_{u in U3} x_u mod R once the round completed, else None."""
        return self.ctx.result

    @property
    def last_masked(self) -> np.ndarray | None:
        """The latest masked input y_u received, unpacked (what the server saw; ServerView)."""
        msg = self.ctx.last_masked
        return None if msg is None else vectors.unpack(msg.packed, msg.length, msg.modulus,
                                                       self.ctx.acc.dtype)

    def start(self) -> bytes:
        """The RoundConfig broadcast to every client."""
        return self.ctx.config_bytes

    def receive(self, data: bytes) -> None:
        """Validate and store (or add up) one client message of the current round."""
        t0 = self.clock()
        try:
            mtype = m.message_type(data)
            if mtype != self.state.expects:
                raise ProtocolError(f"server: message type {mtype} arrived in stage {self.state.name}")
            self.state.receive(self.ctx, data)
        finally:
            self.seconds += self.clock() - t0

    def advance(self) -> dict[int, bytes]:
        """Close the current round; return {client id: message} for the next one."""
        t0 = self.clock()
        try:
            if isinstance(self.state, ServerCompleted):
                raise ProtocolError("server: the round is already complete")
            self.state, outbox = self.state.close(self.ctx)
            return outbox
        finally:
            self.seconds += self.clock() - t0
