"""Asking the vault for a recording's data key, sealed to a key made for this one request.

Used by every service that reads or writes a recording's backup (the proxy, the transcoder, the
uploader). The key comes back in a ``bytearray`` (``RecordingKey.wipe`` overwrites it, and the
owner calls it when its job ends); ``sealedbox.open_sealed`` returns an immutable ``bytes`` copy
first, which lives until the garbage collector reuses its memory: wiping shortens the key's life
in the process, it cannot prove it is gone.
"""

from __future__ import annotations

import asyncio
import secrets

import msgspec
import nats.errors
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS

from . import sealedbox
from .chunkcrypt import KEY_SIZE
from .vault_rpc import (
    SUBJECT_RECORDING_KEY,
    RecordingKeyReply,
    RecordingKeyRequest,
    recording_key_context,
)

REQUESTER_HEADER = "Resguardo-Service"


class RecordingKeyError(Exception):
    """The key could not be had; ``transient`` says whether asking again may help."""

    def __init__(self, message: str, *, transient: bool, status: int = 0) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class RecordingKey:
    """One recording's data key, held for one job. Not picklable, not in ``repr``."""

    __slots__ = ("_key", "key_version", "recording_id")

    def __init__(self, recording_id: str, key: bytearray, key_version: int) -> None:
        self.recording_id = recording_id
        self._key = key
        self.key_version = key_version

    @property
    def data_key(self) -> bytearray:
        if not any(self._key):
            raise RuntimeError("the recording key was wiped")
        return self._key

    def wipe(self) -> None:
        self._key[:] = bytes(len(self._key))

    def __repr__(self) -> str:
        return f"<RecordingKey {self.recording_id} v{self.key_version}>"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a recording key is not picklable")


async def fetch_recording_key(
    nc: NATS,
    *,
    recording_id: str,
    tenant_id: str,
    purpose: str,
    service: str,
    timeout: float = 10.0,
    attempts: int = 3,
) -> RecordingKey:
    """The recording's key for one job (each attempt is a new job: a new id and a new key pair,
    so a reply lost on the way is never replayed). ``RecordingKeyError`` if the vault refuses or
    does not answer."""
    last = ""
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(min(0.5 * 2**attempt, 4.0))
        job_id = f"{purpose}:{service}:{secrets.token_hex(12)}"
        ephemeral = X25519PrivateKey.generate()
        req = RecordingKeyRequest(
            recording_id=recording_id,
            tenant_id=tenant_id,
            job_id=job_id,
            purpose=purpose,
            public_key=sealedbox.public_bytes(ephemeral),
        )
        try:
            msg = await nc.request(
                SUBJECT_RECORDING_KEY,
                msgspec.json.encode(req),
                timeout=timeout,
                headers={REQUESTER_HEADER: service},
            )
            reply = msgspec.json.decode(msg.data, type=RecordingKeyReply)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            last = "the vault did not answer the recording key request"
            continue
        except (msgspec.ValidationError, msgspec.DecodeError):
            last = "the vault's recording key reply is unreadable (do the versions match?)"
            continue
        if reply.problem is not None:
            text = f"the vault refused recording {recording_id}'s key: {reply.problem.message}"
            if reply.problem.status >= 500 or reply.problem.status == 409:
                last = text
                continue
            raise RecordingKeyError(text, transient=False, status=reply.problem.status)
        try:
            plain = bytearray(
                sealedbox.open_sealed(
                    ephemeral, reply.sealed, recording_key_context(recording_id, job_id)
                )
            )
        except sealedbox.SealError:
            last = "the vault's sealed recording key did not open with this job's key"
            continue
        if len(plain) != KEY_SIZE:
            plain[:] = bytes(len(plain))
            last = "the vault's recording key has the wrong size"
            continue
        return RecordingKey(recording_id, plain, reply.key_version)
    raise RecordingKeyError(f"{last} (after {attempts} tries)", transient=True)
