"""The recording's data key for one transcoding attempt, and what a vault refusal means.

One request per attempt (``shared.recording_key``: a fresh job id and key pair each time); the
attempt wipes the key when it ends. A vault that does not answer, or answers 5xx/409, is a retry:
nothing is wrong with the capture. A refusal the event log makes final quarantines at once: the
backup was purged and its key destroyed (410: nothing can ever read it again), or the recording
belongs to another tenant than the capture claims (403). Any other refusal (e.g. 404: the vault
has not seen ``recording.started`` yet) is retried like an incomplete capture, then quarantined.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from shared.natsio import Retry
from shared.recording_key import RecordingKey, RecordingKeyError, fetch_recording_key

PURPOSE = "transcode"
RETRY_DELAY_S = 5.0
REQUEST_TIMEOUT_S = 5.0  # per try (three tries): well within an attempt's lease
FINAL_REFUSALS = (403, 410)


class KeyRefused(Exception):
    """The recording cannot be transcoded, ever (or not after this many tries): the message is
    a quarantine reason."""


async def attempt_key(
    nc: NATS,
    *,
    recording_id: str,
    tenant_id: str,
    service: str,
    attempt: int,
    max_attempts: int,
) -> RecordingKey:
    """The key, or ``Retry`` (try again later), or ``KeyRefused`` (quarantine)."""
    try:
        return await fetch_recording_key(
            nc,
            recording_id=recording_id,
            tenant_id=tenant_id,
            purpose=PURPOSE,
            service=service,
            timeout=REQUEST_TIMEOUT_S,
        )
    except RecordingKeyError as exc:
        final = exc.status in FINAL_REFUSALS
        if exc.transient or (not final and attempt < max_attempts):
            raise Retry(f"no recording key yet: {exc}", RETRY_DELAY_S) from None
        if final:
            raise KeyRefused(f"The recording cannot be read: {exc}") from None
        raise KeyRefused(
            f"The recording's key was refused {attempt} times ({exc}); "
            "the backup is kept for inspection."
        ) from None
