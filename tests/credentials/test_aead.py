"""A256CBC-HS512 (RFC 7518 §5.2.5): the RFC's own test vector, and tampering is always refused."""

from __future__ import annotations

import os

import pytest

from services.credentials import aead, crypto
from services.credentials.keys import MasterKeys

# RFC 7518 Appendix B.3 (AES_256_CBC_HMAC_SHA_512).
K = bytes(range(64))
P = (
    b"A cipher system must not be required to be secret, and it must be able to fall into the "
    b"hands of the enemy without inconvenience"
)
IV = bytes.fromhex("1af38c2dc2b96ffdd86694092341bc04")
A = b"The second principle of Auguste Kerckhoffs"
E = bytes.fromhex(
    "4affaaadb78c31c5da4b1b590d10ffbd3dd8d5d302423526912da037ecbcc7bd"
    "822c301dd67c373bccb584ad3e9279c2e6d12a1374b77f077553df829410446b"
    "36ebd97066296ae6427ea75c2e0846a11a09ccf5370dc80bfecbad28c73f09b3"
    "a3b75e662a2594410ae496b2e2e6609e31e6e02cc837f053d21f37ff4f51950b"
    "be2638d09dd7a4930930806d0703b1f6"
)
T = bytes.fromhex("4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5")


def test_rfc7518_b3_known_answer() -> None:
    ciphertext, tag = aead.encrypt_parts(K, IV, P, A)
    assert ciphertext == E
    assert tag == T
    assert aead.decrypt(K, IV + E + T, A) == P


def test_round_trip_returns_a_wipeable_buffer() -> None:
    key = os.urandom(64)
    for size in (0, 1, 15, 16, 17, 5000):
        plain = os.urandom(size)
        out = aead.decrypt(key, aead.encrypt(key, plain, b"aad"), b"aad")
        assert isinstance(out, bytearray) and out == plain
        aead.wipe(out)
        assert out == bytes(size)


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def _error_of(key: bytes, blob: bytes, aad: bytes) -> str:
    with pytest.raises(aead.AeadError) as info:
        aead.decrypt(key, blob, aad)
    return str(info.value)


def test_every_tampered_part_is_refused_with_the_same_error() -> None:
    key = os.urandom(64)
    aad = b"tenant\x00destination"
    blob = aead.encrypt(key, b'{"secret_access_key":"x"}', aad)
    iv_at, ct_at, tag_at = 0, aead.IV_LEN + 3, len(blob) - 1
    messages = {
        "iv": _error_of(key, _flip(blob, iv_at), aad),
        "ciphertext": _error_of(key, _flip(blob, ct_at), aad),
        "last ciphertext block (padding)": _error_of(key, _flip(blob, len(blob) - 33), aad),
        "tag": _error_of(key, _flip(blob, tag_at), aad),
        "aad": _error_of(key, blob, _flip(aad, 0)),
        "aad length": _error_of(key, blob, aad + b"\x00"),
        "truncated": _error_of(key, blob[:-1], aad),
        "too short": _error_of(key, blob[:40], aad),
        "wrong key": _error_of(os.urandom(64), blob, aad),
    }
    assert len(set(messages.values())) == 1, messages


def test_no_padding_oracle_every_forgery_gets_the_same_error() -> None:
    # A padding oracle needs the decryptor to look at padding before the tag. Varying the last IV
    # byte makes every possible last plaintext byte, valid padding included: all must fail alike.
    key = os.urandom(64)
    blob = aead.encrypt(key, b"0123456789abcde", b"")
    errors = set()
    for guess in range(256):
        forged = bytearray(blob)
        forged[aead.IV_LEN - 1] = guess
        if bytes(forged) == blob:
            continue
        errors.add(_error_of(key, bytes(forged), b""))
    assert errors == {str(aead.AeadError())}


def _keys() -> MasterKeys:
    return MasterKeys({1: os.urandom(32), 2: os.urandom(32)})


def test_a_secret_moved_to_another_row_does_not_open() -> None:
    keys = _keys()
    secret = b'{"secret_access_key":"canary"}'
    sealed = crypto.encrypt_secret(keys, "ten_0000000000000001", "dst_000000000000000a", secret)
    assert sealed.key_version == 2
    assert (
        crypto.decrypt_secret(
            keys,
            "ten_0000000000000001",
            "dst_000000000000000a",
            sealed.ciphertext,
            sealed.wrapped_key,
            2,
        )
        == secret
    )
    for tenant, dest, version in [
        ("ten_0000000000000002", "dst_000000000000000a", 2),  # another tenant
        ("ten_0000000000000001", "dst_000000000000000b", 2),  # another destination
        ("ten_0000000000000001", "dst_000000000000000a", 1),  # another key version
    ]:
        with pytest.raises(aead.AeadError):
            crypto.decrypt_secret(
                keys, tenant, dest, sealed.ciphertext, sealed.wrapped_key, version
            )
    # Two rows' parts swapped: the data key of one does not open the other's ciphertext.
    other = crypto.encrypt_secret(keys, "ten_0000000000000001", "dst_000000000000000a", secret)
    with pytest.raises(aead.AeadError):
        crypto.decrypt_secret(
            keys,
            "ten_0000000000000001",
            "dst_000000000000000a",
            sealed.ciphertext,
            other.wrapped_key,
            2,
        )


def test_unknown_key_version_names_the_fix() -> None:
    keys = MasterKeys({1: os.urandom(32)})
    with pytest.raises(crypto.UnknownKeyVersion, match="RESGUARDO_MASTER_KEYS"):
        crypto.decrypt_secret(keys, "t", "d", b"", b"", 7)


def test_fingerprint_tells_secrets_apart_and_hides_them() -> None:
    keys = _keys()
    a = crypto.fingerprint(keys, 2, b'{"k":"one"}')
    assert a == crypto.fingerprint(keys, 2, b'{"k":"one"}')
    assert a != crypto.fingerprint(keys, 2, b'{"k":"two"}')
    assert a != crypto.fingerprint(MasterKeys({2: os.urandom(32)}), 2, b'{"k":"one"}')
    assert "one" not in a and len(a) == crypto.FINGERPRINT_HEX
