"""Encryption at rest of one destination's secret part (envelope encryption).

    data key (64 random bytes)  --A256CBC-HS512-->  ciphertext of the secret JSON
    master key[v] -HKDF-> wrap key --A256CBC-HS512-->  wrapped data key   (stored with v)

Both AADs bind the ciphertext to its row (format version, tenant id, destination id; the wrap AAD
also the key version), so bytes copied into another row, another tenant or another version do not
open. Deleting the row deletes the wrapped data key: the ciphertext is then unrecoverable
(crypto-shredding) even if a copy of it survives in a backup of the database.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

import msgspec

from . import aead
from .keys import MasterKeys

FORMAT = "v1"
FINGERPRINT_HEX = 24  # 96 bits of a keyed hash: tells versions apart, reveals nothing


def secret_aad(tenant_id: str, destination_id: str) -> bytes:
    return f"resguardo-vault-secret\x00{FORMAT}\x00{tenant_id}\x00{destination_id}".encode()


def wrap_aad(tenant_id: str, destination_id: str, key_version: int) -> bytes:
    return (
        f"resguardo-vault-wrap\x00{FORMAT}\x00{tenant_id}\x00{destination_id}\x00{key_version}"
    ).encode()


def canonical_json(secret: dict[str, Any]) -> bytearray:
    """The secret part as JSON with sorted keys, in a buffer the caller wipes."""
    buf = bytearray()
    msgspec.json.Encoder(order="sorted").encode_into(secret, buf)
    return buf


@dataclass(frozen=True)
class SealedSecret:
    ciphertext: bytes
    wrapped_key: bytes
    key_version: int
    fingerprint: str


def fingerprint(keys: MasterKeys, version: int, secret_json: bytes | bytearray) -> str:
    mac = hmac.new(keys.fingerprint_key(version), bytes(secret_json), hashlib.sha256)
    return mac.hexdigest()[:FINGERPRINT_HEX]


def encrypt_secret(
    keys: MasterKeys, tenant_id: str, destination_id: str, secret_json: bytes | bytearray
) -> SealedSecret:
    version = keys.newest
    data_key = bytearray(os.urandom(aead.KEY_LEN))
    try:
        ciphertext = aead.encrypt(data_key, secret_json, secret_aad(tenant_id, destination_id))
        wrapped = aead.encrypt(
            keys.wrap_key(version), data_key, wrap_aad(tenant_id, destination_id, version)
        )
    finally:
        aead.wipe(data_key)
    return SealedSecret(
        ciphertext=ciphertext,
        wrapped_key=wrapped,
        key_version=version,
        fingerprint=fingerprint(keys, version, secret_json),
    )


class UnknownKeyVersion(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(
            f"master key version {version} is not configured; add it back to "
            "RESGUARDO_MASTER_KEYS or the master key file"
        )
        self.version = version


def decrypt_secret(
    keys: MasterKeys,
    tenant_id: str,
    destination_id: str,
    ciphertext: bytes,
    wrapped_key: bytes,
    key_version: int,
) -> bytearray:
    """The secret JSON, in a buffer the caller must wipe. ``aead.AeadError`` if anything in the
    row (or its binding to tenant, id and version) was altered."""
    if not keys.has(key_version):
        raise UnknownKeyVersion(key_version)
    data_key = aead.decrypt(
        keys.wrap_key(key_version), wrapped_key, wrap_aad(tenant_id, destination_id, key_version)
    )
    try:
        return aead.decrypt(data_key, ciphertext, secret_aad(tenant_id, destination_id))
    finally:
        aead.wipe(data_key)


def rewrap_data_key(
    keys: MasterKeys,
    tenant_id: str,
    destination_id: str,
    wrapped_key: bytes,
    key_version: int,
    new_version: int,
) -> bytes:
    """The row's data key wrapped under ``new_version`` instead of ``key_version``.

    Only the 64-byte data key is unwrapped (into a buffer that is wiped before returning); the
    secret's ciphertext is neither read nor touched, so no plaintext credential ever exists.
    ``aead.AeadError`` if the wrapped key fails authentication; ``UnknownKeyVersion`` if a
    version is missing from ``keys``.
    """
    for version in (key_version, new_version):
        if not keys.has(version):
            raise UnknownKeyVersion(version)
    data_key = aead.decrypt(
        keys.wrap_key(key_version), wrapped_key, wrap_aad(tenant_id, destination_id, key_version)
    )
    try:
        return aead.encrypt(
            keys.wrap_key(new_version), data_key, wrap_aad(tenant_id, destination_id, new_version)
        )
    finally:
        aead.wipe(data_key)
