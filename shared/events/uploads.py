"""UPLOADS stream: delivery to the customer's storage. Written by the uploader."""

from __future__ import annotations

import msgspec

from .base import Event, StreamSpec

STREAM = StreamSpec(
    name="UPLOADS",
    prefix="uploads",
    owner="uploader",
    description="Upload attempts, confirmed files, failures, retention and backup purges.",
)


class UploadAttemptStarted(Event, frozen=True, kw_only=True, tag="upload.attempt_started"):
    # One job = one attempt at one destination. The vault grants credentials once per job.
    job_id: str
    attempt: int
    destination_id: str
    trigger: str = "sealed"  # "sealed" or the resend request id


class RemoteFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    uri: str
    size: int
    sha256: str
    checksum_algorithm: str  # provider-side checksum that confirmed it: "CRC32", "CRC32C", "MD5"...
    checksum: str


class FileUploaded(Event, frozen=True, kw_only=True, tag="upload.file_uploaded"):
    job_id: str
    destination_id: str
    file: RemoteFile


class RecordingUploaded(Event, frozen=True, kw_only=True, tag="upload.uploaded"):
    job_id: str
    destination_id: str
    files: list[RemoteFile]


class UploadFailed(Event, frozen=True, kw_only=True, tag="upload.failed"):
    job_id: str
    destination_id: str
    reason: str
    transient: bool
    will_retry: bool


class RecordingRetained(Event, frozen=True, kw_only=True, tag="upload.retained"):
    job_id: str
    destination_id: str
    reason: str


class BackupPurged(Event, frozen=True, kw_only=True, tag="upload.backup_purged"):
    job_id: str
    bytes_freed: int
    files: int


class ProbeFinished(Event, frozen=True, kw_only=True, tag="upload.probe_finished"):
    """The uploader's answer to ``vault.probe_requested`` (same ``recording_id``: the probe's id):
    what was written, confirmed and deleted, or why the test failed, in the words, HTTP status
    and config field the user is shown. Never a secret: the sentences name causes, not values."""

    job_id: str
    destination_id: str
    passed: bool
    key: str = ""
    checksum_algorithm: str = ""
    checksum: str = ""
    deleted: bool = False
    status: int = 0  # when it failed: 422 (fix the config), 502/503/504 (could not reach it)
    message: str = ""
    field: str = ""


UploadEvent = (
    UploadAttemptStarted
    | FileUploaded
    | RecordingUploaded
    | UploadFailed
    | RecordingRetained
    | BackupPurged
    | ProbeFinished
)
EVENTS: tuple[type[Event], ...] = (
    UploadAttemptStarted,
    FileUploaded,
    RecordingUploaded,
    UploadFailed,
    RecordingRetained,
    BackupPurged,
    ProbeFinished,
)
