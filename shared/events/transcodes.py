"""TRANSCODES stream: sealed outputs. Written by the transcoder, read by the uploader."""

from __future__ import annotations

from typing import Literal

import msgspec

from .base import Event, StreamSpec

STREAM = StreamSpec(
    name="TRANSCODES",
    prefix="transcodes",
    owner="transcoder",
    description="Final files per participant, with SHA-256/CRC-32/size, or the quarantine reason.",
)

FileRole = Literal["media", "checksums", "manifest", "signature"]


class SealedFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # what the customer gets, e.g. "alice.webm" (also in the manifest)
    role: FileRole
    # Size, SHA-256 and CRC-32 of the plaintext: what the customer checks. In the backup the file
    # is encrypted (docs/backup-encryption.md), bound to "<output folder>/<stored_name>".
    size: int
    sha256: str
    crc32: int
    participant_id: str = ""
    duration_s: float = 0.0
    content_type: str = "application/octet-stream"
    # The file's name in the recording's output folder of the backup, when it is not ``name``:
    # media files are stored under a pseudonym, since "alice.webm" says who was on the call.
    # Unset (absent on the wire) in events written before that, and for the sidecars; read it
    # through ``stored_name``.
    stored_as: str | msgspec.UnsetType = msgspec.UNSET

    @property
    def stored_name(self) -> str:
        return self.stored_as if isinstance(self.stored_as, str) and self.stored_as else self.name


class RecordingSealed(Event, frozen=True, kw_only=True, tag="transcode.sealed"):
    output_dir: str  # relative to the backup root
    files: list[SealedFile]


class RecordingQuarantined(Event, frozen=True, kw_only=True, tag="transcode.quarantined"):
    reason: str


TranscodeEvent = RecordingSealed | RecordingQuarantined
EVENTS: tuple[type[Event], ...] = (RecordingSealed, RecordingQuarantined)
