"""Sealing a message to one X25519 public key (X25519 + HKDF-SHA256 + AES-256-GCM).

Used wherever a secret crosses NATS: the API seals a new destination's config to the vault's key,
and the vault seals a one-shot grant to the uploader's fresh per-job key. ``context`` binds the
ciphertext to its purpose (e.g. the job id): opened under any other context, it fails.

    sealed = ephemeral_public(32) | nonce(12) | AES-GCM ciphertext+tag
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_INFO = b"resguardo sealedbox v1"


class SealError(Exception):
    """The sealed message cannot be opened: wrong key, wrong context, or tampered bytes."""


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key(shared: bytes, eph_pub: bytes, recipient_pub: bytes, context: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=eph_pub + recipient_pub,
        info=_INFO + b"\x00" + context,
    )
    return hkdf.derive(shared)


def seal(recipient_public: bytes, plaintext: bytes, context: bytes) -> bytes:
    if len(recipient_public) != 32:
        raise SealError("recipient public key must be 32 bytes")
    eph = X25519PrivateKey.generate()
    eph_pub = public_bytes(eph)
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError:  # a low-order point: every shared key would be all zeros
        raise SealError("recipient public key is not a usable X25519 key") from None
    nonce = os.urandom(12)
    ct = AESGCM(_key(shared, eph_pub, recipient_public, context)).encrypt(nonce, plaintext, context)
    return eph_pub + nonce + ct


def open_sealed(recipient: X25519PrivateKey, sealed: bytes, context: bytes) -> bytes:
    if len(sealed) < 32 + 12 + 16:
        raise SealError("sealed message is too short")
    eph_pub, nonce, ct = sealed[:32], sealed[32:44], sealed[44:]
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        key = _key(shared, eph_pub, public_bytes(recipient), context)
        return AESGCM(key).decrypt(nonce, ct, context)
    except (InvalidTag, ValueError):
        raise SealError("sealed message could not be opened") from None
