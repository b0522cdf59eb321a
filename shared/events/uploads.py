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


UploadEvent = (
    UploadAttemptStarted
    | FileUploaded
    | RecordingUploaded
    | UploadFailed
    | RecordingRetained
    | BackupPurged
)
EVENTS: tuple[type[Event], ...] = (
    UploadAttemptStarted,
    FileUploaded,
    RecordingUploaded,
    UploadFailed,
    RecordingRetained,
    BackupPurged,
)
