"""Wire-format fuzzing: parsers raise MalformedMessageError on any malformed bytes."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import MalformedMessageError
from secagg.masking import messages as m

S = os.urandom(32)
D = os.urandom(32)
VALID = [
    m.RoundConfig(3, os.urandom(16), [1, 2, 5], "emb", 100, 1 << 29, 2, 2, False, 1),
    m.AdvertiseKeys(os.urandom(32), 5, os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(64)),
    m.KeyList(D, [m.AdvertiseKeys(D, c, os.urandom(32), os.urandom(32), os.urandom(32)) for c in (1, 4, 9)]),
    m.EncryptedShares(S, 1, [(2, os.urandom(100)), (3, os.urandom(100))]),
    m.ForwardedShares(S, 2, [(1, os.urandom(100))]),
    m.MaskedInput(S, 4, 10, 1 << 29, os.urandom(37)),
    m.ConsistencyRequest(S, [1, 2, 3]),
    m.ConsistencySignature(S, 2, os.urandom(64)),
    m.UnmaskRequest(S, [1, 2], [(1, os.urandom(64))]),
    m.UnmaskResponse(S, 3, [(1, m.SHARE_SELF_SEED, os.urandom(36)), (2, m.SHARE_MASK_KEY, os.urandom(36))]),
]


@pytest.mark.parametrize("msg", VALID, ids=lambda x: type(x).__name__)
def test_roundtrip(msg):
    assert type(msg).from_bytes(msg.to_bytes()) == msg


@pytest.mark.parametrize("msg", VALID, ids=lambda x: type(x).__name__)
def test_every_truncation_and_any_extension_is_rejected(msg):
    data = msg.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(MalformedMessageError):
            type(msg).from_bytes(data[:cut])
    with pytest.raises(MalformedMessageError, match="trailing"):
        type(msg).from_bytes(data + b"\x00")


def test_wrong_type_version_and_magic_are_rejected():
    data = VALID[5].to_bytes()
    with pytest.raises(MalformedMessageError, match="where type"):
        m.UnmaskResponse.from_bytes(data)
    with pytest.raises(MalformedMessageError, match="version"):
        m.MaskedInput.from_bytes(data[:2] + b"\x09" + data[3:])
    with pytest.raises(MalformedMessageError, match="magic"):
        m.MaskedInput.from_bytes(b"XX" + data[2:])


def test_duplicate_ids_and_unsorted_key_lists_are_rejected():
    with pytest.raises(MalformedMessageError, match="duplicate"):
        m.ConsistencyRequest.from_bytes(m.ConsistencyRequest(S, [1, 1]).to_bytes())
    with pytest.raises(MalformedMessageError, match="duplicate"):
        m.EncryptedShares.from_bytes(m.EncryptedShares(S, 1, [(2, b"a"), (2, b"b")]).to_bytes())
    entries = list(reversed(VALID[2].entries))
    with pytest.raises(MalformedMessageError, match="sorted"):
        m.KeyList.from_bytes(m.KeyList(D, entries).to_bytes())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.binary(max_size=300))
def test_random_bytes_only_raise_malformed(msg, blob):
    for data in (blob, msg.to_bytes()[:4] + blob):
        try:
            type(msg).from_bytes(data)
        except MalformedMessageError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_byte_flips_parse_or_raise_malformed(msg, data):
    raw = bytearray(msg.to_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        type(msg).from_bytes(bytes(raw))
    except MalformedMessageError:
        pass
