"""secagg.paillier against a forging sender or server (issue 13, Paillier and parameter half).

Real keys and real ciphertexts throughout; the attacker edits messages and parameters.
"""

from __future__ import annotations

import base64
import importlib
import json
import secrets
import struct

import gmpy2
import numpy as np
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import make_backend
from secagg.errors import (
    HeadroomExceededError,
    InsecureParameterError,
    InvalidInputError,
    MalformedMessageError,
)
from secagg.paillier import (
    DJNObfuscator,
    EncryptedVector,
    PackedEncryptedVector,
    PrivateKey,
    PublicKey,
    choose_layout,
    generate_keypair,
    private_key_from_bytes,
    private_key_from_json,
    private_key_to_bytes,
    private_key_to_json,
    public_key_from_bytes,
    public_key_from_json,
    public_key_to_bytes,
    public_key_to_json,
    scheme,
    vector_from_bytes,
    vector_from_json,
)
from secagg.paillier import obfuscation, parallel

SMALL = 512
OPT_IN = {"allow_insecure_small_key": True}
FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(SMALL, **OPT_IN)


def _layout(k=8):
    return choose_layout(clip=1.0, precision_bits=10, max_summands=k, key_bits=SMALL)


# ---- no counter trusted from the wire ----------------------------------------------------------

def test_forged_summand_count_cannot_push_a_sum_past_its_headroom(keys):
    """The issue's case: a sum holding 8 summands presented as holding 1, then 7 more added."""
    pk, sk = keys
    lay = _layout(8)
    one = PackedEncryptedVector.encrypt(sk, np.ones(5), lay)
    eight = PackedEncryptedVector.sum([one] * 8)
    blob = eight.to_bytes(include_key=False)
    loaded = vector_from_bytes(blob, pk)
    assert loaded.summands == lay.max_summands, "a loaded sum counts as the most it may hold"
    with pytest.raises(HeadroomExceededError):
        PackedEncryptedVector.sum([loaded] + [one] * 7)
    # a receiver fooled into vouching 1 gets an error at decryption, not 5.9995 instead of 15
    fooled = PackedEncryptedVector.sum([vector_from_bytes(blob, pk, summands=1)] + [one] * 7)
    assert fooled.summands == 8
    with pytest.raises(HeadroomExceededError, match="absorbed 15 summands"):
        fooled.decrypt(sk)


def test_format_1_counters_and_extra_json_fields_are_refused(keys):
    pk, sk = keys
    v = PackedEncryptedVector.encrypt(sk, np.zeros(3), _layout())
    blob = v.to_bytes()
    old = b"SPL1" + blob[4:]  # the format that carried (and trusted) a summand count
    with pytest.raises(MalformedMessageError, match="bad magic"):
        vector_from_bytes(old, **OPT_IN)
    d = json.loads(v.to_json())
    for extra in ({"summands": 1}, {"bound": "ff"}):
        with pytest.raises(MalformedMessageError, match="exactly the fields"):
            vector_from_json(json.dumps(d | extra), **OPT_IN)
    e = json.loads(EncryptedVector.encrypt(sk, np.zeros(2)).to_json())
    with pytest.raises(MalformedMessageError, match="exactly the fields"):
        vector_from_json(json.dumps(e | {"bound": "1"}), **OPT_IN)


def _json_variants(d: dict):
    lay = d.get("layout")
    yield d | {"length": -1}
    yield d | {"length": True}
    yield d | {"length": d["length"] + 1000}  # more values than the ciphertexts hold
    if lay is None:
        yield d | {"exponent": 3}
        yield d | {"exponent": -65}
    else:
        yield d | {"layout": lay | {"clip": -1.0}}
        yield d | {"layout": lay | {"clip": "1"}}
        yield d | {"layout": lay | {"precision_bits": 0}}
        yield d | {"layout": lay | {"max_summands": 0}}
        yield d | {"layout": lay | {"max_summands": -3}}
        yield d | {"layout": {k: v for k, v in lay.items() if k != "clip"}}


def test_negative_or_inconsistent_fields_are_refused_at_load(keys):
    pk, sk = keys
    for v in (EncryptedVector.encrypt(sk, np.array([0.5, -0.25])),
              PackedEncryptedVector.encrypt(sk, np.linspace(-1, 1, 7), _layout())):
        d = json.loads(v.to_json())
        for bad in _json_variants(d):
            with pytest.raises(MalformedMessageError):
                vector_from_json(json.dumps(bad), **OPT_IN)
    # binary: an exponent outside [-64, 0] and a negative clip
    blob = EncryptedVector.encrypt(sk, np.array([0.5])).to_bytes(include_key=False)
    at = 4 + 1 + 1 + 32
    for e in (1, -65):
        with pytest.raises(MalformedMessageError):
            vector_from_bytes(blob[:at] + struct.pack(">h", e) + blob[at + 2:], pk)
    packed = PackedEncryptedVector.encrypt(sk, np.zeros(3), _layout()).to_bytes(include_key=False)
    with pytest.raises(MalformedMessageError):
        vector_from_bytes(packed[:at] + struct.pack(">d", -1.0) + packed[at + 8:], pk)
    # receiver-stated counts are checked too
    for bad in ({"bound": -1}, {"summands": 3}):
        with pytest.raises(MalformedMessageError):
            vector_from_bytes(blob, pk, **bad)
    with pytest.raises(MalformedMessageError):
        vector_from_bytes(packed, pk, summands=0)


@FAST
@given(true=st.integers(1, 8), vouched=st.integers(1, 8), extra=st.integers(0, 8), seed=st.integers(0, 2**32))
def test_loaded_sums_decrypt_exactly_or_refuse(keys, true, vouched, extra, seed):
    """Whatever a receiver is told, a packed sum decrypts to the exact quantized sum or raises."""
    pk, sk = keys
    lay = _layout(8)
    rng = np.random.default_rng(seed)
    parts = [PackedEncryptedVector.encrypt(sk, rng.uniform(-1, 1, 9), lay) for _ in range(true + extra)]
    expected = np.sum([p.decrypt_integers(sk) for p in parts], axis=0)
    blob = PackedEncryptedVector.sum(parts[:true]).to_bytes(include_key=False)
    loaded = vector_from_bytes(blob, pk, summands=vouched)
    try:
        total = PackedEncryptedVector.sum([loaded, *parts[true:]])
        got = total.decrypt_integers(sk)
    except HeadroomExceededError:
        assert vouched < true or vouched + extra > 8 or true + extra > 8
        return
    assert true <= vouched and true + extra <= 8
    assert np.array_equal(got, expected)


def test_server_counts_uploads_itself_in_the_backend(keys):
    """The packed backend vouches each upload from the weights it knows, not the message."""
    pk, sk = keys
    backend = make_backend("paillier_packed", key=sk, **OPT_IN)
    ups = {c: np.full(20, 0.5) for c in range(3)}
    res = backend.aggregate(ups, weights={0: 1.0, 1: 2.0, 2: 1.0})
    assert res.info["summands_declared"] == 4
    assert np.allclose(res.aggregate, 2.0, atol=4 * res.info["layout"]["step"])


# ---- key sizes in every loader -----------------------------------------------------------------

def _loaders_of(pk: PublicKey, sk: PrivateKey | None):
    yield lambda **o: PublicKey(pk.n, **o)
    yield lambda **o: public_key_from_bytes(public_key_to_bytes(pk), **o)
    yield lambda **o: public_key_from_json(public_key_to_json(pk), **o)
    yield lambda **o: PublicKey.from_phe(phe.PaillierPublicKey(int(pk.n)), **o)
    if sk is not None:
        yield lambda **o: private_key_from_bytes(private_key_to_bytes(sk), **o)
        yield lambda **o: private_key_from_json(private_key_to_json(sk), **o)
        yield lambda **o: PrivateKey.from_phe(sk.to_phe(), **o)
        v = EncryptedVector.encrypt(sk, np.zeros(2))
        yield lambda **o: vector_from_bytes(v.to_bytes(), **o)
        yield lambda **o: vector_from_json(v.to_json(), **o)
        yield lambda **o: EncryptedVector.from_phe(v.to_phe(), **o)


def test_every_loader_enforces_the_minimum_key_size(keys):
    pk, sk = keys
    for load in _loaders_of(pk, sk):
        with pytest.raises(InsecureParameterError, match="2048"):
            load()
        load(**OPT_IN)  # the explicit test-only opt-in


def test_n_15_and_malformed_moduli_are_refused_even_with_the_opt_in():
    with pytest.raises(InsecureParameterError):
        PublicKey(15)
    with pytest.raises(InsecureParameterError):
        PublicKey(15, **OPT_IN)
    tiny = PublicKey.__new__(PublicKey)  # a 4-bit key as an attacker would serialize it
    object.__setattr__(tiny, "n", gmpy2.mpz(15))
    for load in (lambda: public_key_from_bytes(public_key_to_bytes(tiny), **OPT_IN),
                 lambda: public_key_from_json(json.dumps({"format": "secagg.paillier/2",
                                                          "kind": "PublicKey", "n": "f"}), **OPT_IN)):
        with pytest.raises(InsecureParameterError):
            load()
    p = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(1024)) | (1 << 1023))
    with pytest.raises(InvalidInputError, match="perfect square"):
        PublicKey(p * p)
    small_factor = 65521 * gmpy2.next_prime(gmpy2.mpz(secrets.randbits(2040)) | (1 << 2039))
    with pytest.raises(InvalidInputError, match="prime factor below"):
        PublicKey(small_factor)


# ---- DJN parameters ----------------------------------------------------------------------------

def test_trivial_djn_generators_are_refused(keys):
    pk, sk = keys
    n = int(pk.n)
    for h in (0, 1, n - 1, n, n + 1, n * n - 1, -1):
        with pytest.raises(InsecureParameterError):
            DJNObfuscator(pk, generator=h)
    for h in (int(sk.p), 2 * int(sk.q)):  # shares a factor with n
        with pytest.raises(InsecureParameterError):
            DJNObfuscator(pk, generator=h)
    # +-1 modulo one prime factor: order <= 2 there
    for hp, hq in ((1, 5), (int(sk.p) - 1, 7)):
        h = int(sk.crt_combine_n(gmpy2.mpz(hp), gmpy2.mpz(hq)))
        with pytest.raises(InsecureParameterError):
            DJNObfuscator(pk, generator=h)
    with pytest.raises(InvalidInputError):
        DJNObfuscator(pk, generator=2.5)


def test_djn_generator_of_small_order_mod_p_is_refused():
    """An order-f element mod p (f | p - 1, 2 < f < 2^16) is caught by the smoothness test."""
    for _ in range(50):
        pk, sk = generate_keypair(SMALL, **OPT_IN)
        small = [f for f in sk.p_factors if 2 < f < 1 << 16]
        if small:
            break
    else:
        pytest.skip("no key with a small odd factor of p - 1 in 50 draws")
    f = small[0]
    p = sk.p
    g = gmpy2.mpz(2)
    while gmpy2.powmod(g, (p - 1) // f, p) == 1:
        g += 1
    hp = gmpy2.powmod(g, (p - 1) // f, p)  # order exactly f mod p
    hq = gmpy2.mpz(secrets.randbelow(int(sk.q) - 3) + 2)
    h = int(sk.crt_combine_n(hp, hq))
    with pytest.raises(InsecureParameterError, match="small order"):
        DJNObfuscator(pk, generator=h)


def test_djn_with_a_valid_generator_gives_nth_residues(keys):
    pk, sk = keys
    y = secrets.randbelow(int(pk.n) - 3) + 2
    obf = DJNObfuscator(pk, generator=int((-y * y) % pk.n))
    assert obf.base == gmpy2.powmod(obf.generator, pk.n, pk.nsquare)
    rs = obf.draw(10)
    assert len(set(rs)) == 10 and all(scheme.decrypt(sk, r) == 0 for r in rs)


def test_djn_exponent_length_follows_the_nist_table():
    assert [obfuscation.security_bits(b) for b in (512, 1024, 2048, 3072, 4096, 7680, 15360)] == \
        [80, 80, 112, 128, 128, 192, 256]
    for bits, least in ((2048, 224), (3072, 256)):
        half = bits // 2
        p = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(half)) | (3 << (half - 2)))
        q = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(half)) | (3 << (half - 2)))
        pk = PublicKey(p * q)
        assert obfuscation.min_djn_exponent_bits(pk.bits) == least
        with pytest.raises(InsecureParameterError, match=str(least)):
            DJNObfuscator(pk, exponent_bits=least - 1)
        assert DJNObfuscator(pk, exponent_bits=least).exponent_bits == least
        assert DJNObfuscator(pk).exponent_bits == half  # DJN's default, above the minimum


# ---- phe conversion -----------------------------------------------------------------------------

def test_phe_exponents_outside_our_range_are_refused_at_conversion(keys):
    pk, sk = keys
    phe_pk = pk.to_phe()
    for number in (phe_pk.encrypt(1.0, precision=16.0**-70), phe_pk.encrypt(1e60)):
        assert not -64 <= number.exponent <= 0
        with pytest.raises(InvalidInputError, match=r"\[-64, 0\]"):
            EncryptedVector.from_phe([number], **OPT_IN)
    mixed = [phe_pk.encrypt(0.5), phe_pk.encrypt(3)]
    with pytest.raises(InvalidInputError, match="max_abs"):
        EncryptedVector.from_phe(mixed, **OPT_IN)
    with pytest.raises(HeadroomExceededError):
        EncryptedVector.from_phe(mixed, max_abs=float(pk.max_int), **OPT_IN)


@FAST
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6),
       precisions=st.lists(st.integers(-80, 4), min_size=6, max_size=6), align=st.booleans())
def test_every_phe_ciphertext_decrypts_like_phe_or_is_refused(keys, values, precisions, align):
    pk, sk = keys
    phe_pk, phe_sk = pk.to_phe(), sk.to_phe()
    numbers = [phe_pk.encrypt(v, precision=16.0**e) for v, e in zip(values, precisions)]
    options = {"max_abs": 1e6} if align else {}
    try:
        ours = EncryptedVector.from_phe(numbers, **options, **OPT_IN)
    except (InvalidInputError, HeadroomExceededError):
        return
    np.testing.assert_array_equal(ours.decrypt(sk), [phe_sk.decrypt(x) for x in numbers])


# ---- weights ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [{0: 5e-324, 1: 5e-324}, {0: 1e-310, 1: 0.0}, {0: 1.5, 1: 1e-12}])
def test_unrepresentable_weights_raise_our_error(weights):
    q = importlib.import_module("secagg.backend")
    with pytest.raises(InvalidInputError):
        q.integer_weights(weights)
    with pytest.raises(InvalidInputError):
        make_backend("secagg").aggregate({c: np.zeros(4) for c in range(4)}, weights=weights | {2: 1.0, 3: 1.0})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1e300, allow_subnormal=True), min_size=1, max_size=5))
def test_integer_weights_never_overflow(ws):
    q = importlib.import_module("secagg.backend")
    weights = dict(enumerate(ws))
    try:
        w_int, scale = q.integer_weights(weights)
    except InvalidInputError:
        return
    assert np.isfinite(scale) and scale > 0
    assert all((w_int[c] > 0) == (w > 0) for c, w in weights.items())


# ---- bounded caches and closable pools ------------------------------------------------------------

def test_default_obfuscator_cache_is_bounded():
    obfuscation.clear_default_obfuscators()
    held = [generate_keypair(256, **OPT_IN)[1] for _ in range(obfuscation.DEFAULT_CACHE_KEYS + 2)]
    for sk in held:
        obfuscation.default_obfuscator(sk)
    assert len(obfuscation._DEFAULT_CACHE) == obfuscation.DEFAULT_CACHE_KEYS
    obfuscation.clear_default_obfuscators()
    assert not obfuscation._DEFAULT_CACHE


def test_backend_process_pools_close(keys):
    pk, sk = keys
    with make_backend("paillier_packed", key=sk, workers=2, **OPT_IN) as backend:
        backend.aggregate({c: np.zeros(300) for c in range(3)})
        assert any(k[0] == int(pk.n) for k in parallel._EXECUTORS)
    assert not any(k[0] == int(pk.n) for k in parallel._EXECUTORS)
    assert len(parallel._EXECUTORS) <= parallel.MAX_EXECUTORS


def test_raw_json_ciphertexts_are_checked(keys):
    """A JSON message whose ciphertext blob is not Z*_{n^2} is refused like the binary one."""
    pk, sk = keys
    d = json.loads(EncryptedVector.encrypt(sk, np.zeros(1)).to_json())
    bad = int(sk.p).to_bytes(pk.ciphertext_bytes, "big")
    d["ciphertexts"] = base64.b64encode(bad).decode()
    with pytest.raises(MalformedMessageError):
        vector_from_json(json.dumps(d), **OPT_IN)
