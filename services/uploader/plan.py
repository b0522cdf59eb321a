"""Pure parts of the uploader: job identity, backoff, and the events each outcome produces.

Every event id is derived from the fact it records, so re-running any step after a crash
publishes the same ids and JetStream drops the duplicates.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.events import event_id, now
from shared.events import uploads as ev

SEALED = "sealed"
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True)
class Job:
    """One attempt at delivering one recording to one destination."""

    recording_id: str
    tenant_id: str
    destination_id: str
    trigger: str  # "sealed", or "resend-<request id>"
    attempt: int  # JetStream delivery count of the message that started it

    @property
    def job_id(self) -> str:
        return f"{self.recording_id}:{self.trigger}:{self.attempt}"

    @property
    def delivery(self) -> str:
        """Same for every attempt of one trigger to one destination: ids of what it delivers."""
        return f"{self.trigger}\x1f{self.destination_id}"


def trigger_of(job_id: str) -> str:
    """The trigger part of a job id (``<rid>:<trigger>:<attempt>``)."""
    parts = job_id.split(":")
    return ":".join(parts[1:-1]) if len(parts) >= 3 else ""


def backoff(base: float, attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1), capped."""
    ceiling = min(base * (2 ** max(attempt - 1, 0)), MAX_BACKOFF_S)
    return float(ceiling * (0.5 + 0.5 * rand()))


def will_retry(attempt: int, max_attempts: int, transient: bool) -> bool:
    return transient and attempt < max_attempts


def _envelope(job: Job, *id_parts: object) -> dict[str, Any]:
    """The fields every job event shares; the id is built from ``id_parts`` (the fact)."""
    return {
        "event_id": event_id(job.recording_id, *id_parts),
        "recording_id": job.recording_id,
        "tenant_id": job.tenant_id,
        "occurred_at": now(),
        "job_id": job.job_id,
        "destination_id": job.destination_id,
    }


def attempt_started(job: Job) -> ev.UploadAttemptStarted:
    return ev.UploadAttemptStarted(
        **_envelope(job, "attempt_started", job.job_id), attempt=job.attempt, trigger=job.trigger
    )


def file_uploaded(job: Job, remote: ev.RemoteFile) -> ev.FileUploaded:
    # The SHA-256 too: the same bytes re-sent dedupe, but an age destination's retry sends a new
    # ciphertext under the same name, and its event must not be dropped as the old one's twin.
    return ev.FileUploaded(
        **_envelope(job, "file_uploaded", job.delivery, remote.name, remote.sha256), file=remote
    )


def uploaded(job: Job, files: list[ev.RemoteFile]) -> ev.RecordingUploaded:
    return ev.RecordingUploaded(**_envelope(job, "uploaded", job.delivery), files=files)


def failed(job: Job, reason: str, *, transient: bool, retry: bool) -> ev.UploadFailed:
    return ev.UploadFailed(
        **_envelope(job, "upload_failed", job.job_id),
        reason=reason,
        transient=transient,
        will_retry=retry,
    )


def retained(job: Job, reason: str) -> ev.RecordingRetained:
    return ev.RecordingRetained(**_envelope(job, "retained", job.job_id), reason=reason)


def backup_purged(
    recording_id: str, tenant_id: str, job_id: str, bytes_freed: int, files: int
) -> ev.BackupPurged:
    # One id per recording: the folder is deleted once, whichever delivery got there.
    return ev.BackupPurged(
        event_id=event_id(recording_id, "backup_purged"),
        recording_id=recording_id,
        tenant_id=tenant_id,
        occurred_at=now(),
        job_id=job_id,
        bytes_freed=bytes_freed,
        files=files,
    )
