"""SecAgg / SecAgg+ protocol runs: exactness under dropouts, aborts, refusals, message abuse."""

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.errors import (InvalidInputError, MalformedMessageError, ProtocolError,
                           RoundAbortedError)
from secagg.masking import SecAggClient, SecAggServer, make_config, run_round
from secagg.masking import messages as m
from secagg.masking import primitives as pr
from secagg.masking.driver import STAGES, _Pool

L = 24


def _inputs(clients, modulus, seed=0):
    rng = np.random.default_rng(seed)
    dtype = pr.word_dtype(modulus)
    return {c: rng.integers(0, min(modulus, 1 << 62) // max(len(clients), 1), L).astype(dtype)
            for c in clients}


def _modsum(inputs, included, modulus):
    """Exact sum mod R in Python integers (no machine-word wrap-around)."""
    return np.sum([inputs[c].astype(object) for c in included], axis=0) % modulus


def _assert_exact(res, inputs, modulus):
    expected = _modsum(inputs, res.included, modulus)
    assert [int(v) for v in res.aggregate] == [int(v) for v in expected]


def _complete_graph_ok(clients, t, stage_of):
    """The abort rule of the complete graph, stated from the protocol description."""
    def alive_after(i):
        return {c for c in clients if stage_of.get(c) not in STAGES[: i + 1]}
    u1, u2, u3 = alive_after(0), alive_after(1), alive_after(2)
    u5 = alive_after(4)
    if len(u1) < max(t + 1, 2) or any(len(u1) - 1 < t for _ in u1):
        return False
    for pool in (u2, u3, u5):
        if len(pool) < max(t, 1) or any(len(pool - {u}) < t for u in u2):
            return False
    return True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(4, 9), st.data())
def test_complete_graph_exact_or_abort_for_any_dropout_pattern(n, data):
    clients = sorted(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n, unique=True)))
    t = data.draw(st.integers(2, n - 1))
    modulus = data.draw(st.sampled_from([1 << 16, 1 << 32, 1 << 40, 1 << 64, 1000003]))
    stage_of = {c: data.draw(st.sampled_from((None, None) + STAGES)) for c in clients}
    stage_of = {c: s for c, s in stage_of.items() if s and s != "consistency"}
    drops = {s: {c for c, x in stage_of.items() if x == s} for s in STAGES}
    inputs = _inputs(clients, modulus)
    config = make_config(clients, L, modulus, k=n - 1, t=t)
    if _complete_graph_ok(clients, t, stage_of):
        res = run_round(inputs, config, dropouts=drops)
        expected_in = [c for c in clients if stage_of.get(c) not in STAGES[:3]]
        assert res.included == expected_in
        _assert_exact(res, inputs, modulus)
    else:
        with pytest.raises(RoundAbortedError):
            run_round(inputs, config, dropouts=drops)


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_harary_graph_exact_or_abort(data):
    n = 24
    clients = list(range(100, 100 + n))
    modulus = 1 << 30
    drops = {s: set(data.draw(st.lists(st.sampled_from(clients), max_size=2, unique=True)))
             for s in ("share_keys", "masked_input", "unmasking")}
    inputs = _inputs(clients, modulus)
    config = make_config(clients, L, modulus, k=8, t=4)
    try:
        res = run_round(inputs, config, dropouts=drops)
    except RoundAbortedError:
        return
    gone = drops["share_keys"] | drops["masked_input"]
    assert set(res.included) == set(clients) - gone
    _assert_exact(res, inputs, modulus)


def test_secagg_plus_survives_dropouts_at_every_stage_including_early_ones():
    # Flower aborts when a client drops before the masked-input stage; we must not.
    clients = list(range(40))
    modulus = 1 << 24
    inputs = _inputs(clients, modulus, seed=3)
    config = make_config(clients, L, modulus, k=16, t=5)
    drops = {"advertise": {0}, "share_keys": {1, 2}, "masked_input": {3, 4}, "unmasking": {5}}
    res = run_round(inputs, config, dropouts=drops)
    assert res.included == [c for c in clients if c not in {0, 1, 2, 3, 4}]
    _assert_exact(res, inputs, modulus)


def test_too_few_survivors_abort_and_reveal_nothing():
    clients = list(range(6))
    inputs = _inputs(clients, 1 << 16)
    config = make_config(clients, L, 1 << 16, k=5, t=4)
    with pytest.raises(RoundAbortedError, match="fewer than t=4"):
        run_round(inputs, config, dropouts={"masked_input": {0, 1, 2}})
    with pytest.raises(RoundAbortedError):
        run_round(inputs, config, dropouts={"unmasking": {0, 1}})


def test_active_variant_with_consistency_check():
    clients = list(range(8))
    inputs = _inputs(clients, 1 << 20)
    config = make_config(clients, L, 1 << 20, k=7, t=5, active=True)
    res = run_round(inputs, config, dropouts={"masked_input": {2}, "consistency": {3}})
    assert res.included == [0, 1, 3, 4, 5, 6, 7]
    _assert_exact(res, inputs, 1 << 20)


# --------------------------------------------------------------------------- manual driving
class Session:
    """Clients and a server driven by hand, to play a misbehaving server or client."""

    def __init__(self, n=6, t=3, modulus=1 << 20, active=False):
        t = max(t, n // 2 + 1) if active else t  # 2t - (n - 1) > C = 1
        self.clients_ids = list(range(1, n + 1))
        self.config = make_config(self.clients_ids, L, modulus, k=n - 1, t=t, active=active)
        self.pki, ids = None, {}
        if active:
            self.pki = {}
            for c in self.clients_ids:
                ids[c], self.pki[c] = pr.ed25519_keypair()
        self.clients = {c: SecAggClient(c, identity_key=ids.get(c), pki=self.pki) for c in self.clients_ids}
        self.inputs = _inputs(self.clients_ids, modulus)
        for c, x in self.inputs.items():
            self.clients[c].set_input(x)
        self.server = SecAggServer(self.config, pki=self.pki)
        self.outbox = {c: self.server.start() for c in self.clients_ids}
        self.sent = {}

    def step(self, skip=()):
        self.sent = {}
        for c, data in self.outbox.items():
            if c in skip:
                continue
            reply = self.clients[c].handle(data)
            self.sent[c] = reply
            self.server.receive(reply)
        self.outbox = self.server.advance()
        return self.outbox


def test_client_refuses_to_reveal_both_secrets_of_a_peer():
    s = Session()
    for _ in range(3):  # keys, shares, masked inputs
        s.step()
    request = s.outbox[1]
    s.clients[1].handle(request)
    # the server now claims peer 2 dropped, asking for its mask key after its seed share
    forged = m.UnmaskRequest(s.server.session, [c for c in s.clients_ids if c != 2]).to_bytes()
    with pytest.raises(ProtocolError, match="refuses.*client 2"):
        s.clients[1].handle(forged)
    # and the other way round, on a fresh client: mask key first, then the seed
    s2 = Session()
    for _ in range(3):
        s2.step()
    s2.clients[1].handle(m.UnmaskRequest(s2.server.session, [1, 3, 4, 5, 6]).to_bytes())
    with pytest.raises(ProtocolError, match="refuses"):
        s2.clients[1].handle(s2.outbox[1])


def test_identical_unmask_request_is_answered_again_with_the_same_kinds():
    s = Session()
    for _ in range(3):
        s.step()
    a = m.UnmaskResponse.from_bytes(s.clients[1].handle(s.outbox[1]))
    b = m.UnmaskResponse.from_bytes(s.clients[1].handle(s.outbox[1]))
    assert a == b


def test_active_client_refuses_survivor_set_other_than_signed():
    s = Session(active=True)
    for _ in range(3):
        s.step()
    s.step()  # consistency signatures
    good = m.UnmaskRequest.from_bytes(s.outbox[1])
    forged = m.UnmaskRequest(good.session, good.survivors[:-1], good.signatures).to_bytes()
    with pytest.raises(ProtocolError, match="differs from the one it signed"):
        s.clients[1].handle(forged)
    no_sigs = m.UnmaskRequest(good.session, good.survivors, good.signatures[:1]).to_bytes()
    with pytest.raises(RoundAbortedError, match="valid consistency signatures"):
        s.clients[1].handle(no_sigs)


def test_tampered_share_ciphertext_is_detected():
    s = Session()
    s.step()
    s.step()
    fw = m.ForwardedShares.from_bytes(s.outbox[1])
    peer, blob = fw.items[0]
    bad = bytearray(blob)
    bad[-1] ^= 0x40
    tampered = m.ForwardedShares(fw.session, fw.client, [(peer, bytes(bad))] + fw.items[1:])
    with pytest.raises(MalformedMessageError, match="authentication"):
        s.clients[1].handle(tampered.to_bytes())


def test_shares_redirected_to_another_client_are_rejected():
    s = Session()
    s.step()
    s.step()
    fw = m.ForwardedShares.from_bytes(s.outbox[2])
    with pytest.raises(ProtocolError):
        s.clients[1].handle(m.ForwardedShares(fw.session, 1, fw.items).to_bytes())


def test_server_rejects_duplicates_unknown_ids_wrong_stage_and_wrong_session():
    s = Session()
    s.step()
    keys_msg = s.sent[1]
    with pytest.raises(ProtocolError, match="in stage ShareKeys"):
        s.server.receive(keys_msg)  # out of order (round 0 message in round 1)
    reply = s.clients[1].handle(s.outbox[1])
    s.server.receive(reply)
    with pytest.raises(ProtocolError, match="duplicate"):
        s.server.receive(reply)
    for c in s.clients_ids[1:]:
        s.server.receive(s.clients[c].handle(s.outbox[c]))
    s.outbox = s.server.advance()
    # a message from the previous session replayed into a new one
    s_new = Session()
    s_new.step()
    s_new.step()
    with pytest.raises(ProtocolError, match="wrong session id|not in this round"):
        s_new.server.receive(m.MaskedInput(s.server.session, 1, L, s.config.modulus,
                                           bytes(((s.config.modulus - 1).bit_length() * L + 7) // 8)).to_bytes())
    with pytest.raises(ProtocolError, match="unknown client id 999"):
        s_new.server.receive(m.MaskedInput(s_new.server.session, 999, L, 1, b"").to_bytes())


def test_server_rejects_keys_for_another_config_and_unknown_sender():
    s = Session()
    other = Session()
    reply = other.clients[1].handle(other.server.start())
    with pytest.raises(ProtocolError, match="another round config"):
        s.server.receive(reply)
    stranger = SecAggClient(77)
    with pytest.raises(ProtocolError, match="not in the round"):
        stranger.handle(s.server.start())


def test_client_rejects_out_of_order_and_altered_key_list():
    s = Session()
    with pytest.raises(ProtocolError, match="arrived in state AdvertiseKeys"):
        s.clients[1].handle(m.UnmaskRequest(b"x" * 32, [1]).to_bytes())
    s.step()
    kl = m.KeyList.from_bytes(s.outbox[1])
    entries = list(kl.entries)
    e = entries[0]
    entries[0] = m.AdvertiseKeys(e.config_digest, e.sender, e.c_pk, entries[1].s_pk, e.seed_commit)
    with pytest.raises(ProtocolError, match="altered|identical"):
        s.clients[1].handle(m.KeyList(kl.config_digest, entries).to_bytes())


def test_input_checks():
    with pytest.raises(InvalidInputError, match="one vector per client"):
        run_round({1: np.zeros(L, np.uint32)}, make_config([1, 2, 3], L, 1 << 8, k=2, t=2))
    with pytest.raises(InvalidInputError, match="unknown dropout stages"):
        run_round(_inputs([1, 2, 3], 1 << 8), make_config([1, 2, 3], L, 1 << 8, k=2, t=2),
                  dropouts={"later": {1}})
    with pytest.raises(InvalidInputError, match="value >= modulus"):
        cfg = make_config([1, 2, 3], L, 1 << 8, k=2, t=2)
        run_round({c: np.full(L, 300, np.uint32) for c in (1, 2, 3)}, cfg)
    c = SecAggClient(1)
    with pytest.raises(InvalidInputError):
        c.handle(m.RoundConfig(0, b"n", [1, 2, 3], "v", L, 1 << 8, 1, 2).to_bytes())  # t > k
    with pytest.raises(InvalidInputError, match="PRG limit"):  # 2^33 uint64 words: longer than one AES stream
        SecAggClient(1).handle(m.RoundConfig(0, b"n", [1, 2, 3], "v", 1 << 33, 1 << 40, 2, 2).to_bytes())


def test_worker_processes_give_the_same_exact_sum_and_propagate_errors():
    clients = list(range(12))
    modulus = 1 << 28
    inputs = _inputs(clients, modulus, seed=5)
    config = make_config(clients, L, modulus, k=11, t=5)
    res = run_round(inputs, config, dropouts={"masked_input": {4}}, workers=2)
    assert res.included == [c for c in clients if c != 4]
    assert all(res.client_seconds[c] > 0 for c in res.included)
    _assert_exact(res, inputs, modulus)
    pool = _Pool({c: SecAggClient(c) for c in clients}, 2, time.perf_counter)
    try:
        with pytest.raises(MalformedMessageError, match="bad magic"):
            pool.handle({3: b"garbage"})
    finally:
        pool.close()


@pytest.mark.parametrize("modulus", [1 << 14, 1000003])
def test_clients_quantize_while_masking_across_chunk_boundaries(modulus):
    """Float inputs with a Quantizer: each client quantizes, masks and packs its vector
    chunk by chunk; the result is the exact sum of the quantized survivors."""
    from secagg.masking.quantize import Quantizer
    from secagg.masking.vectors import CHUNK
    clients, length = list(range(6)), CHUNK + 45
    rng = np.random.default_rng(3)
    xs = {c: rng.normal(size=length) for c in clients}
    quant = {c: Quantizer(2.0, 8, rounding_key=pr.random_seed()) for c in clients}
    res = run_round(xs, make_config(clients, length, modulus, k=5, t=3), quantizers=quant,
                    dropouts={"masked_input": {2}})
    assert res.included == [0, 1, 3, 4, 5]
    expected = sum(quant[c].encode(xs[c], modulus).astype(object) for c in res.included) % modulus
    assert [int(v) for v in res.aggregate] == [int(v) for v in expected]
    with pytest.raises(InvalidInputError, match="NaN"):
        SecAggClient(1).set_input(np.array([0.0, np.nan]), quant[0])
    with pytest.raises(InvalidInputError, match="inf"):
        SecAggClient(1).set_input(np.array([-np.inf, 0.0]), quant[0])
