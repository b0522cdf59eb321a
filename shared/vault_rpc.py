"""Request/reply contracts of the credential vault (core NATS, never stored in a stream).

Subjects (outside ``vault.>``, which the VAULT stream owns: a request there would be stored
and answered by JetStream's publish ack):
    rpc.vault.public_key            -> VaultKeyReply           (anyone)
    rpc.vault.destinations.create   DestinationCreate -> DestinationReply   (API only)
    rpc.vault.destinations.list     DestinationQuery  -> DestinationListReply
    rpc.vault.destinations.get      DestinationQuery  -> DestinationReply
    rpc.vault.destinations.delete   DestinationQuery  -> DestinationReply
    rpc.vault.destinations.update   DestinationUpdate -> DestinationReply   (API only: non-secret
                                    settings such as bucket, region, persist_backup)
    rpc.vault.destinations.test     DestinationQuery  -> ProbeReply         (API only)
                                    (the uploader runs the test: vault.probe_requested ->
                                    a probe grant -> upload.probe_finished)
    rpc.vault.grant                 GrantRequest -> GrantReply  (uploader only)
    rpc.vault.recording_key         RecordingKeyRequest -> RecordingKeyReply
                                    (proxy, transcoder, uploader: a recording's data key)

Secrets travel only sealed (``shared.sealedbox``): the API seals a new destination's config to the
vault's public key; the vault seals a grant to the uploader's fresh per-job key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

SUBJECT_PUBLIC_KEY = "rpc.vault.public_key"
SUBJECT_CREATE = "rpc.vault.destinations.create"
SUBJECT_LIST = "rpc.vault.destinations.list"
SUBJECT_GET = "rpc.vault.destinations.get"
SUBJECT_DELETE = "rpc.vault.destinations.delete"
SUBJECT_TEST = "rpc.vault.destinations.test"
SUBJECT_UPDATE = "rpc.vault.destinations.update"
SUBJECT_GRANT = "rpc.vault.grant"
SUBJECT_RECORDING_KEY = "rpc.vault.recording_key"
# What a recording's data key is asked for (audited with the request): the proxy writes
# segments (and salvages them after a crash), the transcoder reads them and writes outputs, the
# uploader reads outputs to deliver them.
RECORDING_KEY_PURPOSES = ("capture", "salvage", "transcode", "upload")


def create_context(tenant_id: str, name: str) -> bytes:
    return f"destination-create\x00{tenant_id}\x00{name}".encode()


def grant_context(job_id: str) -> bytes:
    return f"grant\x00{job_id}".encode()


def recording_key_context(recording_id: str, job_id: str) -> bytes:
    return f"recording-key\x00{recording_id}\x00{job_id}".encode()


class VaultKeyReply(msgspec.Struct, frozen=True, kw_only=True):
    public_key: bytes  # X25519, raw 32 bytes (base64 in JSON)


class DestinationView(msgspec.Struct, frozen=True, kw_only=True):
    """What anyone but the uploader may see of a destination: never a secret."""

    destination_id: str
    tenant_id: str
    name: str
    provider: str
    config: dict[str, Any]  # non-secret fields only
    secret_fields: list[str]  # names of the secret fields that are set
    fingerprint: str  # keyed hash of the secret part: tells two versions apart, reveals nothing
    created_at: datetime


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """An error the API turns into an HTTP status: ``status`` and ``field`` are for it."""

    status: int
    message: str
    field: str = ""


class DestinationCreate(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    name: str
    provider: str
    sealed_config: bytes  # sealed JSON object of every field, to the vault key, create_context
    probe: bool = True


class DestinationQuery(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    name: str = ""
    destination_id: str = ""


class DestinationUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """Change non-secret settings; a ``None`` value removes an optional one. Secret fields are
    refused: they change only by re-creating the destination."""

    tenant_id: str
    name: str
    config: dict[str, Any]


class DestinationReply(msgspec.Struct, frozen=True, kw_only=True):
    destination: DestinationView | None = None
    problem: Problem | None = None


class DestinationListReply(msgspec.Struct, frozen=True, kw_only=True):
    destinations: list[DestinationView]


class GrantRequest(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    recording_id: str
    tenant_id: str
    destination_id: str
    public_key: bytes  # the uploader's fresh X25519 key for this job only
    # A destination test's job (``vault.probe_requested`` on the VAULT stream, whose
    # recording_id and job_id these are), not an upload's.
    probe: bool = False


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """The plaintext inside a sealed grant."""

    provider: str
    config: dict[str, Any]  # non-secret fields
    secret: dict[str, Any]  # secret fields


class GrantReply(msgspec.Struct, frozen=True, kw_only=True):
    sealed: bytes = b""  # sealed Grant JSON, to GrantRequest.public_key, grant_context(job_id)
    problem: Problem | None = None


class ProbeReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a destination probe wrote, confirmed and deleted (never a secret)."""

    key: str
    checksum_algorithm: str
    checksum: str
    deleted: bool = True  # False: the object could not be removed and is still there


class ProbeReply(msgspec.Struct, frozen=True, kw_only=True):
    destination: DestinationView | None = None
    probe: ProbeReport | None = None
    problem: Problem | None = None


class RecordingKeyRequest(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    tenant_id: str
    job_id: str  # the requester's own, unique per request (one key per job, audited)
    purpose: str  # one of RECORDING_KEY_PURPOSES
    public_key: bytes  # the requester's fresh X25519 key for this job only


class RecordingKeyReply(msgspec.Struct, frozen=True, kw_only=True):
    # the 32-byte data key, sealed to RecordingKeyRequest.public_key with recording_key_context
    sealed: bytes = b""
    key_version: int = 0  # the master key version that wraps it (never the key)
    problem: Problem | None = None
