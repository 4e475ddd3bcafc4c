"""Server state machine of SecAgg / SecAgg+ (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020).

The server collects the messages of one round with :meth:`SecAggServer.receive` and
closes the round with :meth:`SecAggServer.advance` (in a deployment: on a timeout or
when everybody answered), which returns the messages for the next round. The sets
U1 ⊇ U2 ⊇ U3 ⊇ U4 are the clients that answered rounds 0, 1, 2 and 3/4. A round aborts
with RoundAbortedError -- revealing nothing, since only masked data has been seen --
when some client that must be unmasked has fewer than t neighbours left to hold its
shares.

Unmasking (round 4): for u in U3 the server reconstructs b_u and subtracts PRG(b_u);
for v in U2 minus U3 it reconstructs s_v^SK, checks it against v's advertised public
key and cancels sign(u, v) PRG(KA(s_v, s_u)) for every neighbour u in U3, leaving
sum_{u in U3} x_u mod R.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import ProtocolError, RoundAbortedError
from . import messages as m
from . import primitives as pr
from . import shamir, vectors
from .client_states import apply_masks, mask_key_for
from .graph import neighbours


class SecAggServer:
    """Server side of one round. Stages: 0 keys, 1 shares, 2 masked inputs, 3 signatures, 4 unmask."""

    STAGES = ("AdvertiseKeys", "ShareKeys", "MaskedInputCollection", "ConsistencyCheck",
              "Unmasking", "Completed")

    def __init__(self, config: m.RoundConfig, *, pki: dict[int, bytes] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        pr.check_modulus(config.modulus)
        if config.active and pki is None:
            raise ProtocolError("active variant needs the PKI (client id -> Ed25519 public key)")
        self.config = config
        self.config_bytes = config.to_bytes()
        self.digest = config.digest()
        self.pki = pki
        self.stage = 0
        self.session = b""
        self.keys: dict[int, m.AdvertiseKeys] = {}
        self.nbrs: dict[int, list[int]] = {}
        self.index: dict[int, int] = {}
        self.shares_in: dict[int, m.EncryptedShares] = {}
        self.u2: list[int] = []
        self.u3: list[int] = []
        self.acc = np.zeros(config.length, dtype=pr.word_dtype(config.modulus))
        self.masked_from: set[int] = set()
        self._last_masked: m.MaskedInput | None = None
        self.signatures: dict[int, bytes] = {}
        self.unmask_in: dict[int, m.UnmaskResponse] = {}
        self.result: np.ndarray | None = None
        self.seconds = 0.0  #: server time spent in receive/advance, measured with ``clock``
        self.clock = clock

    # ------------------------------------------------------------------ api
    @property
    def stage_name(self) -> str:
        return self.STAGES[self.stage]

    @property
    def last_masked(self) -> np.ndarray | None:
        """The latest masked input y_u received, unpacked (what the server saw; ServerView)."""
        msg = self._last_masked
        return None if msg is None else vectors.unpack(msg.packed, msg.length, msg.modulus, self.acc.dtype)

    def start(self) -> bytes:
        """The RoundConfig broadcast to every client."""
        return self.config_bytes

    def receive(self, data: bytes) -> None:
        """Validate and store one client message of the current round."""
        t0 = self.clock()
        try:
            mtype = m.message_type(data)
            handler = {0: (m.T_ADVERTISE, self._on_keys), 1: (m.T_SHARES, self._on_shares),
                       2: (m.T_MASKED, self._on_masked), 3: (m.T_CONSIST_SIG, self._on_signature),
                       4: (m.T_UNMASK_RESP, self._on_unmask)}.get(self.stage)
            if handler is None or handler[0] != mtype:
                raise ProtocolError(f"server: message type {mtype} arrived in stage {self.stage_name}")
            handler[1](data)
        finally:
            self.seconds += self.clock() - t0

    def advance(self) -> dict[int, bytes]:
        """Close the current round; return {client id: message} for the next one."""
        t0 = self.clock()
        try:
            step = {0: self._close_keys, 1: self._close_shares, 2: self._close_masked,
                    3: self._close_signatures, 4: self._close_unmask}.get(self.stage)
            if step is None:
                raise ProtocolError("server: the round is already complete")
            return step()
        finally:
            self.seconds += self.clock() - t0

    # ------------------------------------------------------------------ helpers
    def _sender_ok(self, sender: int, allowed, seen, what: str) -> None:
        if sender not in self.config.clients:
            raise ProtocolError(f"server: {what} from unknown client id {sender}")
        if sender not in allowed:
            raise ProtocolError(f"server: {what} from client {sender}, which is not in this round's set")
        if sender in seen:
            raise ProtocolError(f"server: duplicate {what} from client {sender}")

    def _session_ok(self, session: bytes, sender: int) -> None:
        if session != self.session:
            raise ProtocolError(f"server: message from client {sender} carries a wrong session id")

    def _need(self, holders: dict[int, list[int]], pool: set[int], when: str) -> None:
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

    # ------------------------------------------------------------------ round 0
    def _on_keys(self, data: bytes) -> None:
        msg = m.AdvertiseKeys.from_bytes(data)
        if msg.config_digest != self.digest:
            raise ProtocolError(f"server: keys of client {msg.sender} are for another round config")
        self._sender_ok(msg.sender, self.config.clients, self.keys, "AdvertiseKeys")
        if self.config.active:
            pub = self.pki.get(msg.sender)
            if pub is None or not pr.ed25519_verify(pub, msg.signature, msg.signed_bytes()):
                raise ProtocolError(f"server: bad signature on the keys of client {msg.sender}")
        self.keys[msg.sender] = msg

    def _close_keys(self) -> dict[int, bytes]:
        u1 = sorted(self.keys)
        if len(u1) < max(self.config.t + 1, 2):
            raise RoundAbortedError(f"round aborted: {len(u1)} clients advertised keys, t={self.config.t}")
        kl = m.KeyList(self.digest, [self.keys[c] for c in u1])
        self.session = pr.session_id(self.config_bytes, kl.key_bytes())
        self.index = {c: i + 1 for i, c in enumerate(u1)}
        self.nbrs = neighbours(self.session, u1, self.config.k)
        self._need(self.nbrs, set(u1), "after AdvertiseKeys")
        self.stage = 1
        data = kl.to_bytes()
        return {c: data for c in u1}

    # ------------------------------------------------------------------ round 1
    def _on_shares(self, data: bytes) -> None:
        msg = m.EncryptedShares.from_bytes(data)
        self._sender_ok(msg.client, self.keys, self.shares_in, "EncryptedShares")
        self._session_ok(msg.session, msg.client)
        if sorted(p for p, _ in msg.items) != self.nbrs[msg.client]:
            raise ProtocolError(f"server: client {msg.client} did not send one share to each neighbour")
        self.shares_in[msg.client] = msg

    def _close_shares(self) -> dict[int, bytes]:
        self.u2 = sorted(self.shares_in)
        u2 = set(self.u2)
        self._need({u: self.nbrs[u] for u in self.u2}, u2, "after ShareKeys")
        inbox: dict[int, list[tuple[int, bytes]]] = {v: [] for v in self.u2}
        for src in self.u2:
            for dst, blob in self.shares_in[src].items:
                if dst in u2:
                    inbox[dst].append((src, blob))
        self.shares_in.clear()
        self.stage = 2
        return {v: m.ForwardedShares(self.session, v, inbox[v]).to_bytes() for v in self.u2}

    # ------------------------------------------------------------------ round 2
    def _on_masked(self, data: bytes) -> None:
        msg = m.MaskedInput.from_bytes(data)
        self._sender_ok(msg.sender, set(self.u2), self.masked_from, "MaskedInput")
        self._session_ok(msg.session, msg.sender)
        if msg.length != self.config.length or msg.modulus != self.config.modulus:
            raise ProtocolError(f"server: masked input of client {msg.sender} has the wrong length or modulus")
        vectors.unpack_add(self.acc, msg.packed, msg.length, msg.modulus)
        self.masked_from.add(msg.sender)
        self._last_masked = msg

    def _close_masked(self) -> dict[int, bytes]:
        self.u3 = sorted(self.masked_from)
        self._need({u: self.nbrs[u] for u in self.u2}, set(self.u3), "after MaskedInputCollection")
        if self.config.active:
            self.stage = 3
            data = m.ConsistencyRequest(self.session, self.u3).to_bytes()
        else:
            self.stage = 4
            data = m.UnmaskRequest(self.session, self.u3).to_bytes()
        return {c: data for c in self.u3}

    # ------------------------------------------------------------------ round 3
    def _on_signature(self, data: bytes) -> None:
        msg = m.ConsistencySignature.from_bytes(data)
        self._sender_ok(msg.sender, set(self.u3), self.signatures, "ConsistencySignature")
        self._session_ok(msg.session, msg.sender)
        if not pr.ed25519_verify(self.pki.get(msg.sender, b""), msg.signature,
                                 m.consistency_bytes(self.session, self.u3)):
            raise ProtocolError(f"server: bad consistency signature from client {msg.sender}")
        self.signatures[msg.sender] = msg.signature

    def _close_signatures(self) -> dict[int, bytes]:
        signers = sorted(self.signatures)
        self._need({u: self.nbrs[u] for u in self.u2}, set(signers), "after ConsistencyCheck")
        self.stage = 4
        data = m.UnmaskRequest(self.session, self.u3, [(c, self.signatures[c]) for c in signers]).to_bytes()
        return {c: data for c in signers}

    # ------------------------------------------------------------------ round 4
    def _on_unmask(self, data: bytes) -> None:
        msg = m.UnmaskResponse.from_bytes(data)
        allowed = set(self.signatures) if self.config.active else set(self.u3)
        self._sender_ok(msg.sender, allowed, self.unmask_in, "UnmaskResponse")
        self._session_ok(msg.session, msg.sender)
        alive = set(self.u3)
        peers = set(self.nbrs[msg.sender]) & set(self.u2)
        for owner, kind, _ in msg.shares:
            if owner not in peers:
                raise ProtocolError(f"server: client {msg.sender} sent a share of non-neighbour {owner}")
            want = m.SHARE_SELF_SEED if owner in alive else m.SHARE_MASK_KEY
            if kind != want:
                raise ProtocolError(f"server: client {msg.sender} sent the wrong kind of share for {owner}")
        self.unmask_in[msg.sender] = msg

    def _close_unmask(self) -> dict[int, bytes]:
        cfg = self.config
        buckets: dict[int, list[tuple[int, bytes]]] = {u: [] for u in self.u2}
        for holder in sorted(self.unmask_in):
            for owner, _, share in self.unmask_in[holder].shares:
                buckets[owner].append((self.index[holder], share))
        secrets = {}
        for owner, got in buckets.items():
            if len(got) < cfg.t:
                raise RoundAbortedError(
                    f"round aborted in Unmasking: {len(got)} shares of client {owner}'s secret, "
                    f"fewer than t={cfg.t}; nothing was revealed"
                )
            got = got[:cfg.t]
            rows = np.stack([np.frombuffer(s, dtype=">u4") for _, s in got])
            secrets[owner] = shamir.reconstruct([x for x, _ in got], rows)[0]
        alive = set(self.u3)
        keys = [mask_key_for(secrets[u], label=pr.LABEL_SELF_MASK, session=self.session, cfg=cfg,
                             party=(u, u)) for u in self.u3]
        signs = [-1] * len(keys)
        for v in self.u2:
            if v in alive:
                continue
            s_sk = pr.x25519_private(secrets[v])
            if pr.x25519_public(s_sk) != self.keys[v].s_pk:
                raise RoundAbortedError(f"round aborted: reconstructed mask key of client {v} "
                                        "does not match its advertised key (bad shares)")
            for u in self.nbrs[v]:
                if u not in alive:
                    continue
                shared = pr.x25519_shared(s_sk, self.keys[u].s_pk)
                keys.append(mask_key_for(shared, label=pr.LABEL_PAIR_MASK, session=self.session,
                                         cfg=cfg, party=(min(u, v), max(u, v))))
                # u added sign(u, v) * mask with sign = +1 iff u < v: remove it
                signs.append(-1 if u < v else 1)
        total = self.acc
        apply_masks(total, keys, signs, cfg)
        self.result = vectors.reduce(total, cfg.modulus)
        self.stage = 5
        return {}
