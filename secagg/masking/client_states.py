"""Client state machine of SecAgg / SecAgg+ (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020).

One state per round, as in Google fcp ``secagg_client_r*``:

* :class:`ClientAdvertiseKeys` (round 0): on RoundConfig, refuse an insecure threshold
  (graph.check_threshold: t >= 2, t > c_k; active variant 2t - k > c_k with C at least
  the client's own ``corrupt_rate``), create the X25519 key pairs (c for share
  encryption, s for masks), draw the self-mask seed b_u and advertise the public keys
  with a commitment to b_u (signed with the long-term Ed25519 identity key in the
  active variant).
* :class:`ClientShareKeys` (round 1): on KeyList, check it (own keys and commitment
  intact, keys unique, signatures, the threshold again for U1 in the active variant),
  derive the session id and the neighbourhood, Shamir-share b_u and s_u^SK t-of-k among
  the neighbours and send each share pair AES-GCM-encrypted under KA(c_u, c_v).
* :class:`ClientMaskedInput` (round 2): on ForwardedShares, decrypt and check the shares
  of the neighbours that survived round 1 (U2), then send
  y_u = x_u + PRG(b_u) + sum_{v in N(u) ∩ U2} sign(u, v) PRG(KA(s_u, s_v)) mod R,
  sign(u, v) = +1 if u < v else -1.
* :class:`ClientConsistencyCheck` (round 3, active variant): sign U3.
* :class:`ClientUnmasking` (round 4): (active variant: only for the very list it signed,
  with t valid signatures on it from its own neighbours) for each neighbour v in U2
  send the share of b_v if v in U3, else the share of s_v^SK -- never both for the
  same v: a later request that would flip a peer's kind is refused (ProtocolError).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError, ProtocolError, RoundAbortedError
from . import messages as m
from . import primitives as pr
from . import shamir, vectors
from .graph import DEFAULT_CORRUPT_RATE, check_threshold, corrupt_count, neighbours_of
from .quantize import Quantizer, check_finite_vector


@dataclass
class ClientContext:
    """Everything one client learns or creates during a session."""

    client_id: int
    identity_key: bytes | None = None  #: Ed25519 private key (active variant)
    pki: dict[int, bytes] | None = None  #: client id -> Ed25519 public key
    input: np.ndarray | None = None  #: quantized words, or floats when ``quantizer`` is set
    quantizer: Quantizer | None = None
    config: m.RoundConfig | None = None
    config_bytes: bytes = b""
    digest: bytes = b""
    c_sk: object = None  #: X25519PrivateKey for share encryption
    c_pk: bytes = b""
    s_sk: object = None  #: X25519PrivateKey for pairwise masks
    s_pk: bytes = b""
    session: bytes = b""
    keys: dict[int, m.AdvertiseKeys] = field(default_factory=dict)  #: the neighbours' keys
    known: set[int] = field(default_factory=set)  #: U1
    neighbours: list[int] = field(default_factory=list)
    enc_keys: dict[int, bytes] = field(default_factory=dict)
    held: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  #: peer -> (b share, s share)
    signed_survivors: list[int] | None = None
    revealed: dict[int, int] = field(default_factory=dict)  #: peer -> share kind sent
    b_seed: bytes = b""
    corrupt_rate: float = DEFAULT_CORRUPT_RATE  #: least corrupt fraction assumed (active variant)
    allow_insecure_threshold: bool = False
    corrupt: int = 0  #: C the threshold is checked against


class ClientState:
    """A round of the client; :meth:`handle` returns (next state, reply bytes or None)."""

    expects: int = 0
    name = "state"

    def handle(self, ctx: ClientContext, data: bytes) -> tuple[ClientState, bytes | bytearray | None]:
        raise NotImplementedError

    def _check_session(self, ctx: ClientContext, session: bytes) -> None:
        if session != ctx.session:
            raise ProtocolError(
                f"client {ctx.client_id}: message for another session (wrong session id)"
            )


class ClientAdvertiseKeys(ClientState):
    expects = m.T_CONFIG
    name = "AdvertiseKeys"

    def handle(self, ctx, data):
        cfg = m.RoundConfig.from_bytes(data)
        _check_config(cfg, ctx)
        ctx.config, ctx.config_bytes = cfg, bytes(data)
        ctx.digest = hashlib.sha256(ctx.config_bytes).digest()
        ctx.c_sk, ctx.c_pk = pr.x25519_keypair()
        ctx.s_sk, ctx.s_pk = pr.x25519_keypair()
        ctx.b_seed = pr.random_seed()
        msg = m.AdvertiseKeys(ctx.digest, ctx.client_id, ctx.c_pk, ctx.s_pk,
                              pr.seed_commitment(ctx.digest, ctx.client_id, ctx.b_seed))
        if cfg.active:
            msg.signature = pr.ed25519_sign(ctx.identity_key, msg.signed_bytes())
        return ClientShareKeys(), msg.to_bytes()


def _check_config(cfg: m.RoundConfig, ctx: ClientContext) -> None:
    pr.check_modulus(cfg.modulus)
    n = len(cfg.clients)
    if ctx.client_id not in cfg.clients:
        raise ProtocolError(f"client {ctx.client_id} is not in the round's client list")
    if cfg.length < 1:
        raise InvalidInputError("RoundConfig: vector length must be >= 1")
    pr.check_prg_length(cfg.length * pr.word_dtype(cfg.modulus).itemsize)
    if not 1 <= cfg.t <= cfg.k or cfg.k > n - 1 or (cfg.k < n - 1 and cfg.k % 2):
        raise InvalidInputError(f"RoundConfig: invalid graph degree k={cfg.k} / threshold t={cfg.t} for n={n}")
    if cfg.active and (ctx.identity_key is None or ctx.pki is None):
        raise InvalidInputError("active variant needs an identity key and the PKI of every client")
    # an active server may understate C: the client holds to its own corrupt_rate
    ctx.corrupt = max(cfg.corrupt, corrupt_count(n, ctx.corrupt_rate)) if cfg.active else cfg.corrupt
    check_threshold(n, cfg.k, cfg.t, ctx.corrupt, active=cfg.active,
                    allow_insecure_threshold=ctx.allow_insecure_threshold)
    if ctx.input is not None:
        _check_input(ctx.input, ctx.quantizer, cfg)


def _check_input(x: np.ndarray, quantizer: Quantizer | None, cfg: m.RoundConfig) -> None:
    if x.shape != (cfg.length,):
        raise InvalidInputError(f"input has shape {x.shape}, the round expects ({cfg.length},)")
    if quantizer is not None:
        quantizer.stream(cfg.modulus)  # headroom check
        return
    if x.dtype != pr.word_dtype(cfg.modulus):
        raise InvalidInputError(f"input dtype {x.dtype} does not match modulus {cfg.modulus}")
    if x.size and int(x.max()) >= cfg.modulus:
        raise InvalidInputError("input has a value >= modulus")


class ClientShareKeys(ClientState):
    expects = m.T_KEYLIST
    name = "ShareKeys"

    def handle(self, ctx, data):
        kl = m.KeyList.from_bytes(data)
        cfg = ctx.config
        if kl.config_digest != ctx.digest:
            raise ProtocolError(f"client {ctx.client_id}: KeyList is for another round config")
        ids = kl.ids.tolist()
        unknown = set(ids) - set(cfg.clients)
        if unknown:
            raise ProtocolError(f"KeyList names unknown client ids {sorted(unknown)}")
        own = kl.entry(ctx.client_id)
        if (own is None or own.c_pk != ctx.c_pk or own.s_pk != ctx.s_pk
                or own.seed_commit != pr.seed_commitment(ctx.digest, ctx.client_id, ctx.b_seed)):
            raise ProtocolError(f"client {ctx.client_id}: own public keys missing or altered in KeyList")
        if not kl.keys_unique():
            raise ProtocolError("KeyList: two advertised public keys are identical")
        ctx.session = pr.session_id(ctx.config_bytes, kl.key_bytes())
        ctx.known = set(ids)
        if cfg.active:  # a server that left honest clients out of U1 concentrates the corrupt ones
            check_threshold(len(ids), cfg.k, cfg.t, ctx.corrupt, active=True)
        ctx.neighbours = neighbours_of(ctx.session, ids, cfg.k, ctx.client_id)
        ctx.keys = {v: kl.entry(v) for v in ctx.neighbours}
        if cfg.active:  # the keys this client will use must be signed by their owners
            for e in ctx.keys.values():
                pub = ctx.pki.get(e.sender)
                if pub is None or not pr.ed25519_verify(pub, e.signature, e.signed_bytes()):
                    raise ProtocolError(f"KeyList: bad or missing signature of client {e.sender}")
        if len(ctx.neighbours) < cfg.t:
            raise RoundAbortedError(
                f"client {ctx.client_id}: {len(ctx.neighbours)} neighbours, fewer than t={cfg.t}"
            )
        xs = (np.searchsorted(kl.ids, ctx.neighbours) + 1).tolist()  # Shamir x = rank in U1
        shares = shamir.share([ctx.b_seed, pr.x25519_raw(ctx.s_sk)], xs, cfg.t)
        half = shamir.LIMBS_PER_SECRET
        items = []
        for row, v in enumerate(ctx.neighbours):
            key = pr.share_key(pr.x25519_shared(ctx.c_sk, ctx.keys[v].c_pk), ctx.session)
            ctx.enc_keys[v] = key
            plain = m.share_plaintext(ctx.client_id, v, shares[row, :half].astype(">u4").tobytes(),
                                      shares[row, half:].astype(">u4").tobytes())
            items.append((v, pr.aead_encrypt(key, plain, m.share_aad(ctx.session, ctx.client_id, v))))
        return ClientMaskedInput(), m.EncryptedShares(ctx.session, ctx.client_id, items).to_bytes()


def mask_key_for(seed: bytes, *, label: bytes, session: bytes, cfg: m.RoundConfig,
                 party: tuple[int, int]) -> bytes:
    """The AES key of one mask of the round (see primitives.mask_key for the binding)."""
    return pr.mask_key(seed, label=label, session=session, round_id=cfg.round_id, party=party,
                       vector=cfg.vector, length=cfg.length, modulus=cfg.modulus)


def apply_masks(acc: np.ndarray, keys: list[bytes], signs: list[int], cfg: m.RoundConfig) -> None:
    """acc += sum_i signs[i] PRG_i mod R.

    For R = 2^r the masks are raw keystream words (uniform mod 2^32 or 2^64, hence mod
    R after the final reduction), streamed chunk by chunk (primitives.add_keystreams).
    Other moduli draw each mask by rejection sampling and add it modularly.
    """
    if vectors.is_pow2(cfg.modulus):
        pr.add_keystreams(acc, keys, signs)
        return
    for key, sign in zip(keys, signs):
        mask = pr.uniform_mod(key, cfg.length, cfg.modulus)
        (vectors.add_into if sign > 0 else vectors.sub_into)(acc, mask, cfg.modulus)


def masked_input_message(ctx: ClientContext, keys: list[bytes], signs: list[int]) -> bytearray:
    """The MaskedInput message of y = x + sum_i signs[i] PRG_i mod R, packed on the fly.

    For R = 2^r the vector is walked in cache-sized chunks: copy (or quantize) a chunk
    of x, add every mask's next keystream words, pack it straight into the message
    buffer (the packer reduces mod R). No full-length quantized or masked copy exists.
    """
    cfg, session, sender = ctx.config, ctx.session, ctx.client_id
    x = ctx.input
    encode = (ctx.quantizer.stream(cfg.modulus).encode_into if ctx.quantizer is not None
              else lambda src, dst: np.copyto(dst, src))
    nbytes = vectors.packed_size(cfg.length, cfg.modulus)
    head = m.MaskedInput.prefix(session, sender, cfg.length, cfg.modulus, nbytes)
    message = bytearray(len(head) + nbytes)  # the one buffer the vector is packed into
    out = np.frombuffer(message, dtype=np.uint8)
    out[:len(head)] = np.frombuffer(head, dtype=np.uint8)
    packer = vectors.Packer(out[len(head):], cfg.length, cfg.modulus)
    dtype = pr.word_dtype(cfg.modulus)
    if vectors.is_pow2(cfg.modulus):
        stream = pr.MaskStream(keys, signs, dtype)
        chunk = np.empty(min(vectors.CHUNK, cfg.length), dtype=dtype)
        for start in range(0, cfg.length, vectors.CHUNK):
            part = chunk[:min(vectors.CHUNK, cfg.length - start)]
            encode(x[start:start + part.size], part)
            stream.add_to(part)
            packer.add_chunk(part)
    else:
        y = np.empty(cfg.length, dtype=dtype)
        for start in range(0, cfg.length, vectors.CHUNK):
            encode(x[start:start + vectors.CHUNK], y[start:start + vectors.CHUNK])
        apply_masks(y, keys, signs, cfg)
        for start in range(0, cfg.length, vectors.CHUNK):
            packer.add_chunk(y[start:start + vectors.CHUNK])
    return message


class ClientMaskedInput(ClientState):
    expects = m.T_FORWARD
    name = "MaskedInputCollection"

    def handle(self, ctx, data):
        fw = m.ForwardedShares.from_bytes(data)
        self._check_session(ctx, fw.session)
        cfg = ctx.config
        if fw.client != ctx.client_id:
            raise ProtocolError(f"client {ctx.client_id}: received shares addressed to {fw.client}")
        if ctx.input is None:
            raise ProtocolError(f"client {ctx.client_id}: no input set before the masked-input round")
        for src, blob in fw.items:
            if src not in ctx.enc_keys:
                raise ProtocolError(f"client {ctx.client_id}: shares from non-neighbour or unknown client {src}")
            plain = pr.aead_decrypt(ctx.enc_keys[src], blob, m.share_aad(ctx.session, src, ctx.client_id))
            sender, recipient, b_share, s_share = m.parse_share_plaintext(plain)
            if sender != src or recipient != ctx.client_id:
                raise ProtocolError(f"client {ctx.client_id}: share ciphertext names {sender}->{recipient}")
            ctx.held[src] = (b_share, s_share)
        if len(ctx.held) < cfg.t:
            raise RoundAbortedError(
                f"client {ctx.client_id}: only {len(ctx.held)} neighbours survived key sharing, t={cfg.t}"
            )
        u = ctx.client_id
        keys = [mask_key_for(ctx.b_seed, label=pr.LABEL_SELF_MASK, session=ctx.session, cfg=cfg,
                             party=(u, u))]
        signs = [1]
        for v in sorted(ctx.held):
            shared = pr.x25519_shared(ctx.s_sk, ctx.keys[v].s_pk)
            keys.append(mask_key_for(shared, label=pr.LABEL_PAIR_MASK, session=ctx.session, cfg=cfg,
                                     party=(min(u, v), max(u, v))))
            signs.append(1 if u < v else -1)
        nxt = ClientConsistencyCheck() if cfg.active else ClientUnmasking()
        return nxt, masked_input_message(ctx, keys, signs)


def _check_survivors(ctx: ClientContext, survivors: list[int]) -> None:
    unknown = set(survivors) - ctx.known
    if unknown:
        raise ProtocolError(f"survivor list names unknown client ids {sorted(unknown)}")
    if len(survivors) < ctx.config.t:
        raise RoundAbortedError(f"only {len(survivors)} survivors, fewer than t={ctx.config.t}")


class ClientConsistencyCheck(ClientState):
    expects = m.T_CONSIST_REQ
    name = "ConsistencyCheck"

    def handle(self, ctx, data):
        req = m.ConsistencyRequest.from_bytes(data)
        self._check_session(ctx, req.session)
        _check_survivors(ctx, req.survivors)
        ctx.signed_survivors = sorted(req.survivors)
        sig = pr.ed25519_sign(ctx.identity_key, m.consistency_bytes(ctx.session, req.survivors))
        return ClientUnmasking(), m.ConsistencySignature(ctx.session, ctx.client_id, sig).to_bytes()


class ClientUnmasking(ClientState):
    expects = m.T_UNMASK_REQ
    name = "Unmasking"

    def handle(self, ctx, data):
        req = m.UnmaskRequest.from_bytes(data)
        self._check_session(ctx, req.session)
        _check_survivors(ctx, req.survivors)
        if ctx.config.active:
            self._check_signatures(ctx, req)
        alive = set(req.survivors)
        shares = []
        for v in sorted(ctx.held):
            kind = m.SHARE_SELF_SEED if v in alive else m.SHARE_MASK_KEY
            if ctx.revealed.get(v, kind) != kind:
                raise ProtocolError(
                    f"client {ctx.client_id} refuses: server asks for the "
                    f"{'self-mask seed' if kind == m.SHARE_SELF_SEED else 'mask key'} share of "
                    f"client {v} after receiving the other secret's share"
                )
            shares.append((v, kind, ctx.held[v][kind]))
        for v, kind, _ in shares:
            ctx.revealed[v] = kind
        # stay in Unmasking: an identical re-request (lost reply) is answered again
        return self, m.UnmaskResponse(ctx.session, ctx.client_id, shares).to_bytes()

    @staticmethod
    def _check_signatures(ctx: ClientContext, req: m.UnmaskRequest) -> None:
        if ctx.signed_survivors != sorted(req.survivors):
            raise ProtocolError(f"client {ctx.client_id}: survivor set differs from the one it signed")
        signed = m.consistency_bytes(ctx.session, ctx.signed_survivors)
        signers = set(req.survivors) & set(ctx.neighbours)
        valid: set[int] = set()
        for c, sig in req.signatures:  # stop at t: the rest cannot change the outcome
            if len(valid) == ctx.config.t:
                break
            if c in signers and c in ctx.pki and pr.ed25519_verify(ctx.pki[c], sig, signed):
                valid.add(c)
        if len(valid) < ctx.config.t:
            raise RoundAbortedError(
                f"client {ctx.client_id}: {len(valid)} valid consistency signatures from its "
                f"neighbours on the list it signed, fewer than t={ctx.config.t}"
            )


class SecAggClient:
    """One client: feed it the server's messages, send back what :meth:`handle` returns.

    >>> client = SecAggClient(7)            # doctest: +SKIP
    >>> client.set_input(words)             # quantized vector in [0, R)
    >>> reply = client.handle(server_bytes)  # bytes for the server, or None

    ``corrupt_rate`` is the least corrupt fraction the client assumes in the active
    variant, whatever the config declares; ``allow_insecure_threshold`` accepts t = 1 or
    t <= c_k (never the active split-view bound; graph.check_threshold).
    """

    def __init__(self, client_id: int, *, identity_key: bytes | None = None,
                 pki: dict[int, bytes] | None = None, corrupt_rate: float = DEFAULT_CORRUPT_RATE,
                 allow_insecure_threshold: bool = False) -> None:
        if not isinstance(client_id, int) or not 0 <= client_id <= m.MAX_CLIENT_ID:
            raise InvalidInputError(f"client id must be an integer in [0, 2^32), got {client_id!r}")
        corrupt_count(1, corrupt_rate)  # range check
        self.ctx = ClientContext(client_id, identity_key, pki, corrupt_rate=corrupt_rate,
                                 allow_insecure_threshold=bool(allow_insecure_threshold))
        self.state: ClientState = ClientAdvertiseKeys()

    @property
    def client_id(self) -> int:
        return self.ctx.client_id

    def set_input(self, x: np.ndarray, quantizer: Quantizer | None = None) -> None:
        """The input x_u, before round 2: words of the round's modulus, or with a
        ``quantizer`` a float vector that is quantized chunk by chunk while masking."""
        if quantizer is None:
            x = np.asarray(x)
        else:
            x = check_finite_vector(x)
        if self.ctx.config is not None:
            _check_input(x, quantizer, self.ctx.config)
        self.ctx.input, self.ctx.quantizer = x, quantizer

    def handle(self, data: bytes) -> bytes | bytearray | None:
        """Process one server message and return the reply; wrong-round messages raise
        ProtocolError. The reply is bytes, except the MaskedInput: a bytearray, the one
        buffer its vector was packed into (any transport takes either)."""
        mtype = m.message_type(data)
        if mtype != self.state.expects:
            raise ProtocolError(
                f"client {self.client_id}: message type {mtype} arrived in state "
                f"{self.state.name} (expects type {self.state.expects})"
            )
        self.state, reply = self.state.handle(self.ctx, data)
        return reply
