"""Events that fill and empty a recording's backup, as the proxy, transcoder and uploader publish
them, at chosen times (for the list's sizes and durations, and the usage series)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from shared.events import captures, event_id, now, transcodes, uploads
from shared.events.base import Event


def at(event: Event, when: datetime) -> Event:
    return msgspec.structs.replace(event, occurred_at=when)


def _env(rid: str, tenant_id: str, when: datetime | None, *what: object) -> dict[str, object]:
    return {
        "event_id": event_id(rid, *what),
        "recording_id": rid,
        "tenant_id": tenant_id,
        "occurred_at": when or now(),
    }


def segment(
    rid: str,
    tenant_id: str,
    seq: int,
    size: int,
    *,
    track: str = "alice-s1-audio",
    first_s: float = 0.0,
    last_s: float = 2.0,
    when: datetime | None = None,
    republished: int = 0,
) -> captures.SegmentWritten:
    """Segment ``seq`` of ``track``: ``size`` bytes, its frames from ``first_s`` to ``last_s``
    seconds after 2026-01-01 (wall clock). ``republished`` gives a new event id to the same
    segment (a proxy that re-publishes it)."""
    base = 1_767_225_600 * 10**9
    return captures.SegmentWritten(
        **_env(rid, tenant_id, when, "segment", track, seq, republished),  # type: ignore[arg-type]
        participant_id="alice",
        track_id=track,
        kind="audio",
        seq=seq,
        path=f"capture/{track}/{seq:06d}.seg",
        sha256="ee" * 32,
        size=size,
        frames=100,
        first_rtp_ts=0,
        last_rtp_ts=96_000,
        first_wallclock_ns=base + int(first_s * 1e9),
        last_wallclock_ns=base + int(last_s * 1e9),
    )


def sealed(
    rid: str,
    tenant_id: str,
    *,
    media: int = 1000,
    sums: int = 80,
    duration_s: float = 61.5,
    when: datetime | None = None,
) -> transcodes.RecordingSealed:
    return transcodes.RecordingSealed(
        **_env(rid, tenant_id, when, "sealed"),  # type: ignore[arg-type]
        output_dir=f"{tenant_id}/{rid}/output",
        files=[
            transcodes.SealedFile(
                name="alice.webm",
                role="media",
                size=media,
                sha256="ab" * 32,
                crc32=1,
                participant_id="alice",
                duration_s=duration_s,
            ),
            transcodes.SealedFile(
                name="SHA256SUMS", role="checksums", size=sums, sha256="cd" * 32, crc32=2
            ),
        ],
    )


def purged(
    rid: str, tenant_id: str, freed: int, *, when: datetime | None = None
) -> uploads.BackupPurged:
    return uploads.BackupPurged(
        **_env(rid, tenant_id, when, "purged"),  # type: ignore[arg-type]
        job_id="job1",
        bytes_freed=freed,
        files=3,
    )


def retained(
    rid: str, tenant_id: str, reason: str, *, job: str = "job1", when: datetime | None = None
) -> uploads.RecordingRetained:
    return uploads.RecordingRetained(
        **_env(rid, tenant_id, when, "retained", job),  # type: ignore[arg-type]
        job_id=job,
        destination_id="dst_00000000000000aa",
        reason=reason,
    )
