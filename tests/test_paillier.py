"""secagg.paillier: keys, raw scheme, obfuscators, EncryptedVector, serialization, phe interop.

Most tests use 512-bit keys (explicit opt-in) for speed; a few use 2048-bit keys.
"""

from __future__ import annotations

import json

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe

from secagg.errors import (
    HeadroomExceededError,
    InsecureParameterError,
    InvalidInputError,
    KeyMismatchError,
    MalformedMessageError,
)
from secagg.paillier import (
    CRTObfuscator,
    DJNObfuscator,
    EncryptedVector,
    FixedPointCodec,
    ObfuscatorPool,
    PoolExhaustedError,
    PrivateKey,
    PublicKey,
    check_group_membership,
    generate_keypair,
    private_key_from_bytes,
    private_key_from_json,
    private_key_to_bytes,
    private_key_to_json,
    public_key_from_bytes,
    public_key_from_json,
    public_key_to_bytes,
    public_key_to_json,
    vector_from_bytes,
    vector_from_json,
)
from secagg.paillier import scheme
from secagg.paillier.obfuscation import FixedBaseTable

SMALL = 512
FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(SMALL, allow_insecure_small_key=True)


@pytest.fixture(scope="module")
def other_keys():
    return generate_keypair(SMALL, allow_insecure_small_key=True)


@pytest.fixture(scope="module")
def keys2048():
    return generate_keypair()


def _float_at_most(x: int) -> float:
    f = float(x)
    return f if int(f) <= x else float(np.nextafter(f, 0.0))


def _enc(pk, m, obf):
    return scheme.encrypt_with(pk, m, obf.draw_one())


# ---- keys -----------------------------------------------------------------------------

def test_generated_key_structure(keys):
    pk, sk = keys
    assert pk.bits == SMALL and sk.p != sk.q
    assert sk.p.bit_length() == sk.q.bit_length() == SMALL // 2
    assert sk.p * sk.q == pk.n and gmpy2.is_prime(sk.p) and gmpy2.is_prime(sk.q)
    # G_p generates the whole order-(p-1) subgroup mod p^2
    for prime, gen, sq, factors in ((sk.p, sk.gen_p, sk.psquare, sk.p_factors),
                                     (sk.q, sk.gen_q, sk.qsquare, sk.q_factors)):
        assert gmpy2.powmod(gen, prime - 1, sq) == 1
        for f in set(factors):
            assert gmpy2.powmod(gen, (prime - 1) // f, sq) != 1


def test_default_key_is_2048_bits(keys2048):
    pk, sk = keys2048
    assert pk.bits == 2048 and pk.ciphertext_bytes == 512 and sk.has_generators


@pytest.mark.parametrize("bits", [512, 1024, 2046])
def test_small_keys_need_explicit_opt_in(bits):
    with pytest.raises(InsecureParameterError):
        generate_keypair(bits)


def test_3072_bit_keys_allowed():
    pk, sk = generate_keypair(3072)
    assert pk.bits == 3072 and scheme.decrypt(sk, _enc(pk, 42, CRTObfuscator(sk))) == 42


def test_key_serialization_roundtrip(keys):
    pk, sk = keys
    small = dict(allow_insecure_small_key=True)
    assert public_key_from_bytes(public_key_to_bytes(pk), **small) == pk
    assert public_key_from_json(public_key_to_json(pk), **small) == pk
    for back in (private_key_from_bytes(private_key_to_bytes(sk), **small),
                 private_key_from_json(private_key_to_json(sk), **small)):
        assert back == sk and back.public_key == pk and back.gen_p == sk.gen_p


def test_tampered_private_key_factorisation_rejected(keys):
    d = json.loads(private_key_to_json(keys[1]))
    d["p_factors"] = d["p_factors"][1:]
    with pytest.raises(MalformedMessageError):
        private_key_from_json(json.dumps(d), allow_insecure_small_key=True)


def test_phe_key_conversion(keys):
    pk, sk = keys
    assert PublicKey.from_phe(pk.to_phe(), allow_insecure_small_key=True) == pk
    back = PrivateKey.from_phe(sk.to_phe(), allow_insecure_small_key=True)
    assert back == sk and not back.has_generators


# ---- raw scheme ---------------------------------------------------------------------------

@FAST
@given(a=st.integers(min_value=0), b=st.integers(min_value=0), k=st.integers(-10**6, 10**6))
def test_raw_homomorphisms(keys, a, b, k):
    pk, sk = keys
    n = int(pk.n)
    a, b = a % n, b % n
    obf = CRTObfuscator(sk)
    ca, cb = _enc(pk, a, obf), _enc(pk, b, obf)
    assert scheme.decrypt(sk, scheme.add(pk, ca, cb)) == (a + b) % n
    assert scheme.decrypt(sk, scheme.add_plain(pk, ca, b)) == (a + b) % n
    assert scheme.decrypt(sk, scheme.mul_scalar(pk, ca, k)) == (k * a) % n
    assert scheme.decrypt(sk, scheme.negate(pk, ca)) == (-a) % n
    rr = scheme.rerandomize(pk, ca, obf.draw_one())
    assert rr != ca and scheme.decrypt(sk, rr) == a


@pytest.mark.parametrize("m", [0, 1, -1])
def test_raw_edge_plaintexts(keys, m):
    pk, sk = keys
    m = m % int(pk.n)
    assert scheme.decrypt(sk, _enc(pk, m, CRTObfuscator(sk))) == m


def test_plaintext_out_of_range_rejected(keys):
    pk, sk = keys
    with pytest.raises(InvalidInputError):
        scheme.encrypt_with(pk, int(pk.n), CRTObfuscator(sk).draw_one())


def test_ciphertext_not_in_group_rejected(keys):
    pk, sk = keys
    for bad in (0, int(pk.nsquare), int(sk.p) * 7):
        with pytest.raises(MalformedMessageError):
            scheme.check_ciphertext(pk, bad)


# ---- obfuscators ---------------------------------------------------------------------------

def _obfuscators(pk, sk):
    powmod_crt = CRTObfuscator(PrivateKey.from_phe(sk.to_phe(), allow_insecure_small_key=True))
    return [CRTObfuscator(sk), powmod_crt, DJNObfuscator(pk), DJNObfuscator(pk, exponent_bits=224),
            DJNObfuscator(pk, exponent_bits=224, private_key=sk)]


def test_obfuscators_are_fresh_nth_residues(keys):
    pk, sk = keys
    obfs = _obfuscators(pk, sk)
    assert [o.method for o in obfs[:2]] == ["fixed-base", "powmod"]
    for obf in obfs:
        rs = obf.draw(20)
        assert len(set(rs)) == 20
        # an n-th residue is an encryption of 0; check membership through decryption
        assert all(scheme.decrypt(sk, r) == 0 for r in rs)


def test_crt_obfuscator_is_textbook_distributed_on_components(keys):
    """R mod p^2 must lie in, and spread over, the order-(p-1) subgroup H_p (as r^n does)."""
    pk, sk = keys
    rs = CRTObfuscator(sk).draw(200)
    assert all(gmpy2.powmod(r, sk.p - 1, sk.psquare) == 1 for r in rs)
    # the quadratic character of R mod p is balanced (a proper-subgroup sampler would fail)
    squares = sum(gmpy2.legendre(r % sk.p, sk.p) == 1 for r in rs)
    assert 60 < squares < 140


@settings(max_examples=25, deadline=None)
@given(a=st.integers(min_value=0, max_value=(1 << 224) - 1))
def test_djn_through_crt_is_the_same_number_as_the_public_path(keys, a):
    """A key holder's CRT path computes exactly h_s^a mod n^2, the public path's R."""
    pk, sk = keys
    public, holder = _djn_pair(pk, sk)
    expected = gmpy2.powmod(public.base, a, pk.nsquare)
    assert public._tables[0].pow(a) == expected
    assert sk.crt_combine_nsquare(holder._tables[0].pow(a), holder._tables[1].pow(a)) == expected


_DJN_PAIRS: dict = {}


def _djn_pair(pk, sk):
    if id(sk) not in _DJN_PAIRS:
        public = DJNObfuscator(pk, exponent_bits=224)
        holder = DJNObfuscator(pk, exponent_bits=224, generator=int(public.generator), private_key=sk)
        _DJN_PAIRS[id(sk)] = (public, holder)
    return _DJN_PAIRS[id(sk)]


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(min_value=8, max_value=300), data=st.data())
def test_fixed_base_table_equals_powmod_at_every_window(keys, bits, data):
    """B^a from the table equals gmpy2.powmod for any exponent length and table budget."""
    _, sk = keys
    budget = data.draw(st.sampled_from([0, 1 << 16, 1 << 20, FixedBaseTable.MAX_BYTES]))
    table = FixedBaseTable(sk.gen_p, sk.psquare, bits, max_bytes=budget)
    assert FixedBaseTable.MIN_WINDOW <= table.window <= FixedBaseTable.MAX_WINDOW
    assert budget == 0 or table.window == FixedBaseTable.MIN_WINDOW or table.nbytes <= budget
    a = data.draw(st.integers(min_value=0, max_value=(1 << bits) - 1))
    assert table.pow(a) == gmpy2.powmod(sk.gen_p, a, sk.psquare)
    with pytest.raises(InvalidInputError):
        table.pow(1 << (table.window * table.n_windows))


def test_djn_refuses_a_private_key_of_another_key(keys, other_keys):
    with pytest.raises(InvalidInputError, match="does not belong"):
        DJNObfuscator(keys[0], exponent_bits=224, private_key=other_keys[1])


def test_djn_short_exponent_guard(keys):
    with pytest.raises(InsecureParameterError):
        DJNObfuscator(keys[0], exponent_bits=128)


def test_obfuscator_pool(keys):
    pk, sk = keys
    pool = ObfuscatorPool(CRTObfuscator(sk))
    spent = pool.fill(10)
    assert len(pool) == 10 and spent > 0 and pool.fill_seconds == spent
    drawn = pool.draw(7)
    assert len(pool) == 3 and len(set(drawn)) == 7
    with pytest.raises(PoolExhaustedError):
        pool.draw(4)
    vec = EncryptedVector.encrypt(sk, np.array([1.5, -2.0, 0.25]), obfuscator=pool)
    assert len(pool) == 0 and np.array_equal(vec.decrypt(sk), [1.5, -2.0, 0.25])
    pool.fill(8, workers=2)  # filled by a process pool, cost still recorded
    assert len(pool) == 8 and pool.fill_seconds > spent
    assert all(scheme.decrypt(sk, r) == 0 for r in pool.draw(8))


def test_obfuscator_of_other_key_rejected(keys, other_keys):
    with pytest.raises(KeyMismatchError):
        EncryptedVector.encrypt(keys[1], np.ones(2), obfuscator=CRTObfuscator(other_keys[1]))


# ---- EncryptedVector --------------------------------------------------------------------------

floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
vectors = st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.lists(floats, min_size=k, max_size=k), st.lists(floats, min_size=k, max_size=k)))


@FAST
@given(ab=vectors, k=st.integers(-1000, 1000), public=st.booleans())
def test_vector_homomorphisms(keys, ab, k, public):
    pk, sk = keys
    a, b = (np.array(v) for v in ab)
    codec = FixedPointCodec(-8)
    res = codec.resolution
    ea = EncryptedVector.encrypt(pk if public else sk, a, codec=codec)
    eb = EncryptedVector.encrypt(sk, b, codec=codec)
    qa, qb = np.rint(a / res) * res, np.rint(b / res) * res  # encoded values
    np.testing.assert_array_equal(ea.decrypt(sk), qa)
    np.testing.assert_allclose((ea + eb).decrypt(sk), qa + qb, rtol=1e-12, atol=res)
    np.testing.assert_allclose((ea - eb).decrypt(sk), qa - qb, rtol=1e-12, atol=res)
    np.testing.assert_allclose((-ea).decrypt(sk), -qa, rtol=1e-12, atol=res)
    np.testing.assert_allclose((ea * k).decrypt(sk), qa * k, rtol=1e-12, atol=res)
    np.testing.assert_allclose((ea + b).decrypt(sk), qa + qb, rtol=1e-12, atol=res)
    np.testing.assert_allclose(EncryptedVector.sum([ea, eb, ea]).decrypt(sk), 2 * qa + qb,
                               rtol=1e-12, atol=res)


def test_vector_edge_values(keys):
    pk, sk = keys
    x = np.array([0.0, -0.0, 1e-300, -1e-300, 2.0**-32, -(2.0**-32)])
    got = EncryptedVector.encrypt(sk, x).decrypt(sk)
    assert np.array_equal(got, [0, 0, 0, 0, 2.0**-32, -(2.0**-32)])
    # the largest magnitude the codec accepts, and one beyond
    codec = FixedPointCodec(0)
    top = _float_at_most(int(pk.max_int))
    assert EncryptedVector.encrypt(sk, np.array([top, -top]), codec=codec).decrypt(sk).tolist() == [top, -top]
    with pytest.raises(HeadroomExceededError):
        EncryptedVector.encrypt(sk, np.array([float(pk.n)]), codec=codec)


def test_vector_overflow_is_an_error_not_a_wrap(keys):
    pk, sk = keys
    codec = FixedPointCodec(0)
    big = _float_at_most(int(pk.max_int) // 2)
    v = EncryptedVector.encrypt(sk, np.array([big]), codec=codec)
    (v + v).decrypt(sk)  # fits
    with pytest.raises(HeadroomExceededError):
        v + v + v
    with pytest.raises(HeadroomExceededError):
        v * 3


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array([np.inf]), np.ones((2, 2)), ["a"]])
def test_vector_bad_values(keys, bad):
    with pytest.raises(InvalidInputError):
        EncryptedVector.encrypt(keys[1], bad)


def test_vector_mixing_keys_or_codecs_rejected(keys, other_keys):
    a = EncryptedVector.encrypt(keys[1], np.ones(3))
    b = EncryptedVector.encrypt(other_keys[1], np.ones(3))
    with pytest.raises(KeyMismatchError):
        a + b
    with pytest.raises(KeyMismatchError):
        a.decrypt(other_keys[1])
    with pytest.raises(InvalidInputError):
        a + EncryptedVector.encrypt(keys[1], np.ones(3), codec=FixedPointCodec(-4))
    with pytest.raises(InvalidInputError):
        a + EncryptedVector.encrypt(keys[1], np.ones(4))
    with pytest.raises(InvalidInputError):
        a * 1.5
    with pytest.raises(InvalidInputError):
        a + np.ones(4)


def test_parallel_workers_match_serial(keys):
    pk, sk = keys
    x = np.linspace(-3, 3, 40)
    v = EncryptedVector.encrypt(sk, x, workers=2)
    assert np.array_equal(v.decrypt(sk, workers=2), v.decrypt(sk))
    np.testing.assert_allclose(v.decrypt(sk), x, atol=1e-9)


# ---- serialization ------------------------------------------------------------------------------

def test_vector_serialization_roundtrip(keys):
    pk, sk = keys
    v = EncryptedVector.encrypt(sk, np.array([1.25, -7.5, 0.0]))
    blob = v.to_bytes()
    assert len(blob) < 3 * pk.ciphertext_bytes + pk.byte_length + 40  # key once, not per value
    for back in (vector_from_bytes(blob, allow_insecure_small_key=True),
                 vector_from_json(v.to_json(), allow_insecure_small_key=True),
                 vector_from_bytes(v.to_bytes(include_key=False), pk)):
        assert back.ciphertexts == v.ciphertexts and back.exponent == v.exponent
        assert np.array_equal(back.decrypt(sk), [1.25, -7.5, 0.0])


def test_malformed_messages_rejected(keys, other_keys):
    pk, sk = keys
    v = EncryptedVector.encrypt(sk, np.array([1.0, 2.0]))
    blob = v.to_bytes()
    width = pk.ciphertext_bytes
    out_of_range = blob[:-width] + b"\xff" * width
    not_in_group = blob[:-width] + int(sk.q * 3).to_bytes(width, "big")
    for bad in (blob[:-1], blob + b"\x00", b"XXXX" + blob[4:], b"", out_of_range, not_in_group,
                blob[:4] + b"\x09" + blob[5:]):
        with pytest.raises(MalformedMessageError):
            vector_from_bytes(bad, allow_insecure_small_key=True)
    for bad in ("{", "[]", json.dumps({"format": "secagg.paillier/2", "kind": "EncryptedVector"})):
        with pytest.raises(MalformedMessageError):
            vector_from_json(bad)
    with pytest.raises(MalformedMessageError):
        vector_from_bytes(v.to_bytes(include_key=False))  # names its key by fingerprint only
    # without the per-message group check, the bad factor survives into any sum
    lax = vector_from_bytes(not_in_group, check_group=False, bound=v.bound, allow_insecure_small_key=True)
    with pytest.raises(MalformedMessageError):
        check_group_membership(pk, EncryptedVector.sum([v, lax, v]).ciphertexts)
    check_group_membership(pk, (v + v).ciphertexts)
    with pytest.raises(KeyMismatchError):
        vector_from_bytes(v.to_bytes(include_key=False), other_keys[0])


# ---- phe interoperability -------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [SMALL, 2048])
def test_phe_interop_both_ways(bits, keys, keys2048):
    pk, sk = keys if bits == SMALL else keys2048
    x = np.array([0.5, -1.75, 3.0, 0.0])
    ours = EncryptedVector.encrypt(sk, x, codec=FixedPointCodec(-5))
    phe_sk = sk.to_phe()
    assert [phe_sk.decrypt(c) for c in ours.to_phe()] == x.tolist()
    phe_pk = pk.to_phe()
    theirs = [phe_pk.encrypt(v) for v in [0.25, -3, 1e-3]]  # differing exponents
    small = dict(allow_insecure_small_key=bits == SMALL)
    got = EncryptedVector.from_phe(theirs, max_abs=3, **small).decrypt(sk)  # aligning needs a bound
    np.testing.assert_allclose(got, [0.25, -3, 1e-3], rtol=1e-12)
    # phe arithmetic on our ciphertexts, then our decryption
    mixed = [a + b for a, b in zip(ours.to_phe(), [phe_pk.encrypt(1.0, precision=16.0**-5)] * 4)]
    np.testing.assert_allclose(EncryptedVector.from_phe(mixed, **small).decrypt(sk), x + 1.0)


def test_phe_foreign_key_rejected(keys):
    other = phe.generate_paillier_keypair(n_length=SMALL)[0]
    with pytest.raises(KeyMismatchError):
        EncryptedVector.from_phe([keys[0].to_phe().encrypt(1), other.encrypt(1)], allow_insecure_small_key=True)
