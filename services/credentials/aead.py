"""AES-256-CBC + HMAC-SHA-512 authenticated encryption, exactly as RFC 7518 §5.2.5 (A256CBC-HS512).

    key (64 bytes)  = MAC_KEY (first 32) | ENC_KEY (last 32)
    C               = AES-256-CBC(ENC_KEY, IV, PKCS7(P))
    AL              = bit length of AAD, 64-bit big-endian
    T               = HMAC-SHA-512(MAC_KEY, AAD | IV | C | AL)[:32]
    blob            = IV (16) | C | T (32)

Decryption checks the tag in constant time BEFORE it decrypts or unpads, and every failure (short
input, wrong tag, bad padding) raises the same ``AeadError`` with the same text: a caller can learn
nothing about why, so there is no padding oracle.

The plaintext comes back in a ``bytearray`` the caller can overwrite when done (``wipe``).
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_LEN = 64
IV_LEN = 16
TAG_LEN = 32
BLOCK = 16


class AeadError(Exception):
    """The ciphertext could not be authenticated (wrong key, wrong AAD or altered bytes)."""

    def __init__(self) -> None:
        super().__init__("ciphertext could not be authenticated")


def _tag(mac_key: bytes | bytearray, aad: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    # One-shot OpenSSL HMAC (the stdlib's): the same HMAC-SHA-512 as an object fed four
    # updates, at about half the Python overhead, and this runs twice per grant.
    msg = b"".join((aad, iv, ciphertext, struct.pack(">Q", len(aad) * 8)))
    return hmac.digest(mac_key, msg, "sha512")[:TAG_LEN]


def _check_key(key: bytes | bytearray) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"A256CBC-HS512 needs a {KEY_LEN}-byte key")


def encrypt_parts(
    key: bytes | bytearray, iv: bytes, plaintext: bytes | bytearray, aad: bytes
) -> tuple[bytes, bytes]:
    """(ciphertext, tag) for a given IV: the RFC's own interface, used by the known-answer test."""
    _check_key(key)
    if len(iv) != IV_LEN:
        raise ValueError(f"IV must be {IV_LEN} bytes")
    mac_key, enc_key = bytes(key[:32]), bytes(key[32:])
    padder = padding.PKCS7(BLOCK * 8).padder()
    padded = padder.update(bytes(plaintext)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return ciphertext, _tag(mac_key, aad, iv, ciphertext)


def encrypt(key: bytes | bytearray, plaintext: bytes | bytearray, aad: bytes) -> bytes:
    """IV | C | T with a fresh random IV."""
    iv = os.urandom(IV_LEN)
    ciphertext, tag = encrypt_parts(key, iv, plaintext, aad)
    return iv + ciphertext + tag


def decrypt(key: bytes | bytearray, blob: bytes, aad: bytes) -> bytearray:
    """The plaintext of ``blob`` (IV | C | T), or ``AeadError`` for any kind of failure."""
    _check_key(key)
    if not isinstance(blob, bytes):
        blob = bytes(blob)  # asyncpg gives bytes already: no copy then
    if len(blob) < IV_LEN + BLOCK + TAG_LEN or (len(blob) - IV_LEN - TAG_LEN) % BLOCK:
        raise AeadError
    iv, ciphertext, tag = blob[:IV_LEN], blob[IV_LEN:-TAG_LEN], blob[-TAG_LEN:]
    expected = _tag(key[:32], aad, iv, ciphertext)
    if not hmac.compare_digest(expected, tag):
        raise AeadError
    decryptor = Cipher(algorithms.AES(bytes(key[32:])), modes.CBC(iv)).decryptor()
    out = bytearray(len(ciphertext) + BLOCK - 1)
    n = decryptor.update_into(ciphertext, out)
    tail = decryptor.finalize()  # CBC without padding emits every block from update_into
    if tail or n != len(ciphertext):
        wipe(out)
        raise AeadError
    # Authenticated, so the padding was written by us; still checked, with the same error.
    pad = out[n - 1]
    if not 1 <= pad <= BLOCK or any(b != pad for b in out[n - pad : n]):
        wipe(out)
        raise AeadError
    wipe(memoryview(out)[n - pad :])
    del out[n - pad :]
    return out


def wipe(buf: bytearray | memoryview) -> None:
    """Overwrite a mutable buffer with zeros (best effort: see the note in ``vault.py``)."""
    buf[:] = bytes(len(buf))  # same length: written in place, never reallocated
