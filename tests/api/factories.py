"""Events as the other services publish them (deterministic ids, like theirs)."""

from __future__ import annotations

import hashlib

from shared.events import captures, event_id, now, recordings, transcodes, uploads, webhooks
from shared.ids import new_recording_id


def started(
    tenant_id: str, recording_id: str | None = None, *, token: str = "t", label: str = ""
) -> recordings.RecordingStarted:
    rid = recording_id or new_recording_id()
    return recordings.RecordingStarted(
        event_id=event_id(rid, "started"),
        recording_id=rid,
        tenant_id=tenant_id,
        occurred_at=now(),
        destination_id="dst_00000000000000aa",
        destination_name="archive",
        whip_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
        label=label,
    )


def _env(rid: str, tenant_id: str, *what: object) -> dict[str, object]:
    return {
        "event_id": event_id(rid, *what),
        "recording_id": rid,
        "tenant_id": tenant_id,
        "occurred_at": now(),
    }


def joined(rid: str, tenant_id: str, pid: str, session: str) -> captures.ParticipantJoined:
    return captures.ParticipantJoined(
        **_env(rid, tenant_id, "joined", pid, session),  # type: ignore[arg-type]
        participant_id=pid,
        session_id=session,
        display_name=pid.title(),
        joined_at_ns=1,
    )


def left(rid: str, tenant_id: str, pid: str, session: str) -> captures.ParticipantLeft:
    return captures.ParticipantLeft(
        **_env(rid, tenant_id, "left", pid, session),  # type: ignore[arg-type]
        participant_id=pid,
        session_id=session,
        reason="hangup",
        left_at_ns=2,
    )


def closed(rid: str, tenant_id: str) -> captures.CaptureClosed:
    return captures.CaptureClosed(
        **_env(rid, tenant_id, "closed"),  # type: ignore[arg-type]
        segments=0,
        tracks=0,
    )


MEDIA = transcodes.SealedFile(
    name="alice.webm", role="media", size=1234, sha256="ab" * 32, crc32=7, participant_id="alice"
)
SUMS = transcodes.SealedFile(
    name="SHA256SUMS", role="checksums", size=80, sha256="cd" * 32, crc32=8
)


def sealed(rid: str, tenant_id: str) -> transcodes.RecordingSealed:
    return transcodes.RecordingSealed(
        **_env(rid, tenant_id, "sealed"),  # type: ignore[arg-type]
        output_dir=f"{tenant_id}/{rid}/output",
        files=[MEDIA, SUMS],
    )


def quarantined(rid: str, tenant_id: str) -> transcodes.RecordingQuarantined:
    return transcodes.RecordingQuarantined(
        **_env(rid, tenant_id, "quarantined"),  # type: ignore[arg-type]
        reason="segment 3 of alice-video failed its SHA-256 check",
    )


def attempt(
    rid: str, tenant_id: str, job: str = "job1", trigger: str = "sealed"
) -> uploads.UploadAttemptStarted:
    return uploads.UploadAttemptStarted(
        **_env(rid, tenant_id, "attempt", job),  # type: ignore[arg-type]
        job_id=job,
        attempt=1,
        destination_id="dst_00000000000000aa",
        trigger=trigger,
    )


def remote(name: str, size: int, sha: str) -> uploads.RemoteFile:
    return uploads.RemoteFile(
        name=name,
        uri=f"s3://bucket/t/{name}",
        size=size,
        sha256=sha,
        checksum_algorithm="CRC32",
        checksum="AAAAAA==",
    )


def file_uploaded(rid: str, tenant_id: str, job: str = "job1") -> uploads.FileUploaded:
    return uploads.FileUploaded(
        **_env(rid, tenant_id, "file", job, MEDIA.name),  # type: ignore[arg-type]
        job_id=job,
        destination_id="dst_00000000000000aa",
        file=remote(MEDIA.name, MEDIA.size, MEDIA.sha256),
    )


def uploaded(rid: str, tenant_id: str, job: str = "job1") -> uploads.RecordingUploaded:
    return uploads.RecordingUploaded(
        **_env(rid, tenant_id, "uploaded", job),  # type: ignore[arg-type]
        job_id=job,
        destination_id="dst_00000000000000aa",
        files=[
            remote(MEDIA.name, MEDIA.size, MEDIA.sha256),
            remote(SUMS.name, SUMS.size, SUMS.sha256),
        ],
    )


def retained(rid: str, tenant_id: str, job: str = "job1") -> uploads.RecordingRetained:
    return uploads.RecordingRetained(
        **_env(rid, tenant_id, "retained", job),  # type: ignore[arg-type]
        job_id=job,
        destination_id="dst_00000000000000aa",
        reason="access denied by the destination",
    )


# --- WEBHOOKS, as the notifier publishes them -------------------------------------------------


def queued(
    rid: str,
    tenant_id: str,
    endpoint_id: str,
    *,
    webhook_id: str = "msg_1",
    webhook_type: str = "recording.uploaded",
    redelivery_of: str = "",
    n: int = 0,
) -> webhooks.DeliveryQueued:
    """A queued delivery; its ``event_id`` is the delivery id."""
    return webhooks.DeliveryQueued(
        **_env(rid, tenant_id, "queued", endpoint_id, webhook_id, n),  # type: ignore[arg-type]
        endpoint_id=endpoint_id,
        webhook_id=webhook_id,
        webhook_type=webhook_type,
        source_event_id=event_id(rid, "source", webhook_id),
        body='{"type": "' + webhook_type + '"}',
        redelivery_of=redelivery_of,
    )


def attempted(
    q: webhooks.DeliveryQueued, attempt: int, status: int, error: str = ""
) -> webhooks.DeliveryAttempted:
    return webhooks.DeliveryAttempted(
        **_env(q.recording_id, q.tenant_id, "attempted", q.event_id, attempt),  # type: ignore[arg-type]
        delivery_id=q.event_id,
        endpoint_id=q.endpoint_id,
        webhook_id=q.webhook_id,
        attempt=attempt,
        status=status,
        latency_ms=12.5,
        error=error,
        next_attempt_at=None if 200 <= status < 300 else now(),
    )


def delivered(q: webhooks.DeliveryQueued, attempts: int = 1) -> webhooks.DeliveryDelivered:
    return webhooks.DeliveryDelivered(
        **_env(q.recording_id, q.tenant_id, "delivered", q.event_id),  # type: ignore[arg-type]
        delivery_id=q.event_id,
        endpoint_id=q.endpoint_id,
        webhook_id=q.webhook_id,
        attempts=attempts,
        status=204,
    )


def gave_up(q: webhooks.DeliveryQueued, attempts: int = 3) -> webhooks.DeliveryGaveUp:
    return webhooks.DeliveryGaveUp(
        **_env(q.recording_id, q.tenant_id, "gave_up", q.event_id),  # type: ignore[arg-type]
        delivery_id=q.event_id,
        endpoint_id=q.endpoint_id,
        webhook_id=q.webhook_id,
        attempts=attempts,
        reason="retries spent: the receiver answered 500 every time",
    )
