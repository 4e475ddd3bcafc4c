"""Adversarial SecAgg / SecAgg+ suite: we play an actively malicious server (and corrupt
clients) against the real client state machines (issue 13).

* split-view attack on the active variant: the parameters are refused, or the victim's
  self-mask seed and mask key are never both rebuildable from what the server received;
* bit flips in the seed shares a holder returns: exact sum or abort, never a wrong sum;
* every accepted modulus class, vector length and dropout pattern: exact sum or abort;
* thresholds: t = 1 or t <= c_k only with the explicit insecure opt-in.
"""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.errors import InsecureParameterError, ProtocolError, RoundAbortedError
from secagg.masking import SecAggClient, SecAggServer, client_states, graph, make_config, run_round
from secagg.masking import messages as m
from secagg.masking import primitives as pr
from secagg.masking import shamir
from secagg.masking.driver import STAGES

L = 8


def _words(clients, modulus, length, seed):
    """Inputs uniform over the whole of [0, R): sums wrap the machine word if anything can."""
    rng = random.Random(seed)
    dtype = pr.word_dtype(modulus)
    return {c: np.array([rng.randrange(modulus) for _ in range(length)], dtype=dtype) for c in clients}


def _exact(inputs, included, modulus):
    length = len(next(iter(inputs.values())))
    return [sum(int(inputs[c][i]) for c in included) % modulus for i in range(length)]


# --------------------------------------------------------------------------- split view
class SplitView:
    """A malicious server that runs rounds 0-2 honestly, then shows survivor list U to some
    of the victim's neighbours and U minus the victim to the others (Bonawitz et al. 2017,
    section 6: the attack the consistency round and the threshold must stop)."""

    def __init__(self, config, corrupt_of_victim: int, *, victim_rank: int = 0):
        ids = config.clients
        self.config = config
        self.idkeys, self.pki = {}, {}
        for c in ids:
            self.idkeys[c], self.pki[c] = pr.ed25519_keypair()
        self.clients = {c: SecAggClient(c, identity_key=self.idkeys[c], pki=self.pki) for c in ids}
        for c, x in _words(ids, config.modulus, config.length, 1).items():
            self.clients[c].set_input(x)
        self.server = SecAggServer(config, pki=self.pki)
        outbox = {c: self.server.start() for c in ids}
        for _ in range(3):  # AdvertiseKeys, ShareKeys, MaskedInput: honest
            for c, data in outbox.items():
                self.server.receive(self.clients[c].handle(data))
            outbox = self.server.advance()
        ctx = self.server.ctx
        self.session, self.u3 = ctx.session, list(ctx.u3)
        self.victim = ids[victim_rank]
        nbrs = ctx.nbrs[self.victim]
        self.corrupt = set(nbrs[:corrupt_of_victim])  # the worst case: corrupt clients next to the victim
        self.honest_nbrs = [c for c in nbrs if c not in self.corrupt]

    def attack(self, side_a: list[int]) -> tuple[bool, bool]:
        """Show U to everyone but the honest neighbours outside ``side_a``, who see U - victim.
        Returns (seed rebuilt, mask key rebuilt) from every share the server obtained."""
        full = self.u3
        cut = [c for c in full if c != self.victim]
        side_b = set(self.honest_nbrs) - set(side_a)
        view = {c: (cut if c in side_b else full) for c in full if c not in self.corrupt}
        sigs = {tuple(full): [], tuple(cut): []}
        for c, lst in view.items():
            reply = self.clients[c].handle(m.ConsistencyRequest(self.session, lst).to_bytes())
            sigs[tuple(lst)].append((c, m.ConsistencySignature.from_bytes(reply).signature))
        for c in self.corrupt:  # corrupt clients sign both lists
            for lst in (full, cut):
                signature = pr.ed25519_sign(self.idkeys[c], m.consistency_bytes(self.session, lst))
                sigs[tuple(lst)].append((c, signature))
        got = {m.SHARE_SELF_SEED: [], m.SHARE_MASK_KEY: []}
        index = self.server.ctx.index
        for c, lst in view.items():
            request = m.UnmaskRequest(self.session, lst, sorted(sigs[tuple(lst)])).to_bytes()
            try:
                reply = m.UnmaskResponse.from_bytes(self.clients[c].handle(request))
            except (RoundAbortedError, ProtocolError):
                continue  # the client saw through it and released nothing
            for owner, kind, share in reply.shares:
                if owner == self.victim:
                    got[kind].append((index[c], share))
        for c in self.corrupt:  # and hand over both of their shares of the victim
            b_share, s_share = self.clients[c].ctx.held[self.victim]
            got[m.SHARE_SELF_SEED].append((index[c], b_share))
            got[m.SHARE_MASK_KEY].append((index[c], s_share))
        victim = self.clients[self.victim].ctx
        truth = {m.SHARE_SELF_SEED: victim.b_seed, m.SHARE_MASK_KEY: pr.x25519_raw(victim.s_sk)}
        return tuple(self._rebuilds(got[kind], truth[kind]) for kind in (m.SHARE_SELF_SEED, m.SHARE_MASK_KEY))

    def _rebuilds(self, shares, secret) -> bool:
        t = self.config.t
        if len(shares) < t:
            return False
        rows = np.stack([np.frombuffer(s, dtype=">u4") for _, s in shares[:t]])
        return shamir.reconstruct([x for x, _ in shares[:t]], rows)[0] == secret


SPLITS = {  # which honest neighbours of the victim see U (the others see U minus the victim)
    "halves": lambda h: h.honest_nbrs[: len(h.honest_nbrs) // 2],  # the attack as reported
    "seed side just enough": lambda h: h.honest_nbrs[:h.config.t - len(h.corrupt)],
}


SETTINGS = [  # (n, old insecure (k, t) from the issue, corrupt clients, finder)
    (100, (16, 6), 0, lambda n: graph.find_parameters(n, active=True)),
    (8, (7, 4), 1, lambda n: graph.complete_parameters(n, active=True)),
    (20, (19, 10), 1, lambda n: graph.complete_parameters(n, active=True)),
]


@pytest.mark.parametrize("n,old,corrupt,finder", SETTINGS)
def test_split_view_parameters_of_the_report_are_refused_everywhere(n, old, corrupt, finder):
    k, t = old
    clients = list(range(1, n + 1))
    with pytest.raises(InsecureParameterError, match=r"2t - k > c_k"):
        make_config(clients, L, 1 << 16, k=k, t=t, active=True)
    passive = graph.find_parameters(n) if n >= 65 else graph.complete_parameters(n)
    assert (passive.k, passive.t) == old  # the semi-honest finders still pick these ...
    with pytest.raises(InsecureParameterError, match=r"2t - k > c_k"):  # ... but not for active
        make_config(clients, L, 1 << 16, params=passive, active=True)
    # a hand-written config that understates the corrupt count: server and client refuse it
    raw = m.RoundConfig(0, b"nonce", clients, "v", L, 1 << 16, k, t, True, 0)
    with pytest.raises(InsecureParameterError, match=r"2t - k > c_k"):
        SecAggServer(raw, pki={})
    sk, pk = pr.ed25519_keypair()
    with pytest.raises(InsecureParameterError, match=r"need t >= "):
        SecAggClient(1, identity_key=sk, pki={1: pk}).handle(raw.to_bytes())
    params = finder(n)
    assert params.active and 2 * params.t - params.k > params.corrupt_neighbours >= corrupt
    assert 0 < params.tolerated_dropout_rate < 1


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("n,old,corrupt,finder", SETTINGS)
def test_split_view_attack_never_rebuilds_both_secrets(n, old, corrupt, finder, split):
    params = finder(n)
    config = make_config(list(range(1, n + 1)), L, 1 << 16, params=params, active=True)
    # as many corrupt clients next to the victim as the bound allows (c_k >= the count)
    assert params.corrupt_neighbours >= corrupt
    h = SplitView(config, params.corrupt_neighbours)
    seed, key = h.attack(SPLITS[split](h))
    assert not (seed and key)


def test_split_view_harness_does_rebuild_both_secrets_without_the_bound(monkeypatch):
    """Control: with the threshold checks switched off, the same harness unmasks the victim
    on 9 clients with t = 4 and one corrupt client (2t - k = 0 <= c_k = 1)."""
    from secagg.masking import server_states
    monkeypatch.setattr(client_states, "check_threshold", lambda *a, **kw: 0)
    monkeypatch.setattr(server_states, "check_threshold", lambda *a, **kw: 0)
    config = m.RoundConfig(0, b"nonce", list(range(1, 10)), "v", L, 1 << 16, 8, 4, True, 1)
    h = SplitView(config, 1)
    assert h.attack(h.honest_nbrs[:3]) == (True, True)


def test_active_client_counts_only_neighbour_signatures_on_the_list_it_signed():
    n = 14
    config = make_config(list(range(n)), L, 1 << 16, k=6, t=4, active=True)
    h = SplitView(config, 0)
    u = h.victim
    nbrs = set(h.server.ctx.nbrs[u])
    outsiders = [c for c in h.u3 if c not in nbrs and c != u]
    lst = h.u3
    for c in h.u3:
        h.clients[c].handle(m.ConsistencyRequest(h.session, lst).to_bytes())
    signed = m.consistency_bytes(h.session, lst)
    foreign = [(c, pr.ed25519_sign(h.idkeys[c], signed)) for c in outsiders]  # valid, but not neighbours
    with pytest.raises(RoundAbortedError, match="from its neighbours"):
        h.clients[u].handle(m.UnmaskRequest(h.session, lst, foreign).to_bytes())
    other = m.consistency_bytes(h.session, lst[1:])  # neighbours' signatures on another list
    wrong = [(c, pr.ed25519_sign(h.idkeys[c], other)) for c in sorted(nbrs)]
    with pytest.raises(RoundAbortedError, match="on the list it signed"):
        h.clients[u].handle(m.UnmaskRequest(h.session, lst, wrong).to_bytes())
    right = [(c, pr.ed25519_sign(h.idkeys[c], signed)) for c in sorted(nbrs)]
    request = m.UnmaskRequest(h.session, lst, right).to_bytes()
    reply = m.UnmaskResponse.from_bytes(h.clients[u].handle(request))
    assert {o for o, _, _ in reply.shares} == nbrs


# --------------------------------------------------------------------------- tampered shares
def _run_with_flip(rng: random.Random, n: int, t: int):
    clients = list(range(1, n + 1))
    config = make_config(clients, L, 1 << 20, k=n - 1, t=t)
    inputs = _words(clients, config.modulus, L, rng.random())
    agents = {c: SecAggClient(c) for c in clients}
    for c, x in inputs.items():
        agents[c].set_input(x)
    server = SecAggServer(config)
    outbox = {c: server.start() for c in clients}
    gone = {rng.choice(clients)} if rng.random() < 0.5 else set()  # its mask key gets rebuilt
    for stage in range(3):
        for c, data in outbox.items():
            if stage < 2 or c not in gone:
                server.receive(agents[c].handle(data))
        outbox = server.advance()
    holder = rng.choice(sorted(outbox))
    silent = set(rng.sample([c for c in outbox if c != holder], rng.choice([0, 0, 1])))
    for c, data in outbox.items():
        if c in silent:
            continue
        reply = m.UnmaskResponse.from_bytes(agents[c].handle(data))
        if c == holder:
            i = rng.randrange(len(reply.shares))
            owner, kind, share = reply.shares[i]
            bit = rng.randrange(8 * len(share))
            bad = bytearray(share)
            bad[bit // 8] ^= 1 << (bit % 8)
            shares = list(reply.shares)
            shares[i] = (owner, kind, bytes(bad))
            reply = m.UnmaskResponse(reply.session, c, shares)
        try:
            server.receive(reply.to_bytes())
        except ProtocolError:  # a share that is not a field element is refused on arrival
            assert c == holder
    try:
        server.advance()
    except RoundAbortedError:
        return "aborted", None
    assert server.result is not None
    assert [int(v) for v in server.result] == _exact(inputs, server.u3, config.modulus)
    assert set(server.faulty) <= {holder} and all(o == owner for o in server.faulty.get(holder, []))
    return "exact", server.faulty


def test_bit_flips_in_returned_shares_never_give_a_wrong_sum():
    """One holder flips one bit of one share it returns (a self-mask seed share, or a mask-key
    share when a client dropped before its masked input)."""
    rng = random.Random(13)
    outcomes = [_run_with_flip(rng, 6, 3) for _ in range(200)]
    kinds = [o for o, _ in outcomes]
    named = sum(1 for _, faulty in outcomes if faulty)
    # every trial is exact or aborted (asserted inside); the correcting path really ran
    assert kinds.count("exact") > 100 and named > 20, (kinds.count("exact"), named)


def test_a_holder_corrupting_every_share_is_named_and_the_sum_stays_exact():
    clients = list(range(1, 13))
    config = make_config(clients, L, 1 << 20, k=11, t=7)
    inputs = _words(clients, config.modulus, L, 7)
    agents = {c: SecAggClient(c) for c in clients}
    for c, x in inputs.items():
        agents[c].set_input(x)
    server = SecAggServer(config)
    outbox = {c: server.start() for c in clients}
    for _ in range(3):
        for c, data in outbox.items():
            server.receive(agents[c].handle(data))
        outbox = server.advance()
    for c, data in outbox.items():
        reply = m.UnmaskResponse.from_bytes(agents[c].handle(data))
        if c == 1:  # every share it returns is off by one bit
            reply = m.UnmaskResponse(reply.session, c, [(o, k, bytes([s[0] ^ 1]) + s[1:])
                                                        for o, k, s in reply.shares])
        server.receive(reply.to_bytes())
    server.advance()
    assert list(server.faulty) == [1]
    assert [int(v) for v in server.result] == _exact(inputs, clients, config.modulus)


def test_seed_commitment_is_checked_and_bound_into_the_key_list():
    """A client whose own commitment was swapped in the KeyList refuses the round."""
    clients = [1, 2, 3, 4]
    config = make_config(clients, L, 1 << 16, k=3, t=2)
    agents = {c: SecAggClient(c) for c in clients}
    server = SecAggServer(config)
    for c in clients:
        server.receive(agents[c].handle(server.start()))
    kl = m.KeyList.from_bytes(server.advance()[1])
    entries = kl.entries
    e = entries[0]
    entries[0] = m.AdvertiseKeys(e.config_digest, e.sender, e.c_pk, e.s_pk, bytes(32))
    with pytest.raises(ProtocolError, match="altered"):
        agents[e.sender].handle(m.KeyList(kl.config_digest, entries).to_bytes())


# --------------------------------------------------------------------------- moduli
MODULI = st.one_of(
    st.integers(1, 64).map(lambda r: 1 << r),  # powers of two, 2 .. 2^64
    st.integers(3, (1 << 31) - 1).filter(lambda r: r & (r - 1)),  # small non-powers of two
    st.integers((1 << 31) + 1, (1 << 32) - 1).filter(lambda r: r & (r - 1)),  # the uint32 wrap zone
    st.sampled_from([3_000_000_019, (1 << 32) - 5]),  # the report's examples
    st.integers((1 << 32) + 1, 1 << 63).filter(lambda r: r & (r - 1)),  # uint64 words
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modulus=MODULI, length=st.integers(1, 70), n=st.integers(4, 6), data=st.data())
def test_every_accepted_modulus_gives_the_exact_sum_or_aborts(modulus, length, n, data):
    clients = list(range(n))
    t = data.draw(st.integers(2, n - 1))
    stage_of = {c: data.draw(st.sampled_from((None, None, None) + STAGES[:3] + STAGES[4:])) for c in clients}
    drops = {s: {c for c, x in stage_of.items() if x == s} for s in STAGES}
    inputs = _words(clients, modulus, length, data.draw(st.integers(0, 2**32)))
    config = make_config(clients, length, modulus, k=n - 1, t=t)
    try:
        res = run_round(inputs, config, dropouts=drops)
    except RoundAbortedError:
        return
    assert res.included == [c for c in clients if stage_of[c] not in STAGES[:3]]
    assert [int(v) for v in res.aggregate] == _exact(inputs, res.included, modulus)


# --------------------------------------------------------------------------- thresholds
def test_threshold_one_or_at_most_the_corrupt_bound_needs_the_opt_in():
    clients = list(range(6))
    inputs = _words(clients, 1 << 16, L, 3)
    with pytest.raises(InsecureParameterError, match="allow_insecure_threshold"):
        make_config(clients, L, 1 << 16, k=5, t=1)
    with pytest.raises(InsecureParameterError, match="t=2 <= c_k=2"):
        make_config(clients, L, 1 << 16, k=5, t=2, corrupt_rate=0.3)
    raw = m.RoundConfig(0, b"nonce", clients, "v", L, 1 << 16, 5, 1)
    with pytest.raises(InsecureParameterError, match="allow_insecure_threshold"):
        SecAggClient(0).handle(raw.to_bytes())
    config = make_config(clients, L, 1 << 16, k=5, t=1, allow_insecure_threshold=True)
    with pytest.raises(InsecureParameterError):
        run_round(inputs, config)
    res = run_round(inputs, config, allow_insecure_threshold=True)
    assert [int(v) for v in res.aggregate] == _exact(inputs, clients, 1 << 16)
    # the active variant has no opt-in
    with pytest.raises(InsecureParameterError, match="2t - k > c_k"):
        make_config(clients, L, 1 << 16, k=5, t=3, active=True, allow_insecure_threshold=True)


@pytest.mark.parametrize("n", [5, 12, 40, 64, 65, 100, 300, 1000])
@pytest.mark.parametrize("corrupt_rate", [0.0, 0.05, 0.1])
def test_active_finders_always_satisfy_the_split_view_bound(n, corrupt_rate):
    for finder in (graph.find_parameters, graph.complete_parameters):
        try:
            p = finder(n, corrupt_rate=corrupt_rate, dropout_rate=0.05, active=True)
        except InsecureParameterError as exc:
            assert "2t - (n - 1) > C" in str(exc)  # no t fits both the bound and the dropouts
            continue
        c_k = graph.check_threshold(n, p.k, p.t, graph.corrupt_count(n, corrupt_rate), active=True)
        assert 2 * p.t - min(p.k, n - 1) > c_k and p.t > c_k
        assert round(p.tolerated_dropout_rate * n) >= int(0.05 * n)  # at least the D it was asked for
