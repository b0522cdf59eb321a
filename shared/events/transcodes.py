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
    name: str  # relative to the recording's output folder, e.g. "alice.webm"
    role: FileRole
    size: int
    sha256: str
    crc32: int
    participant_id: str = ""
    duration_s: float = 0.0
    content_type: str = "application/octet-stream"


class RecordingSealed(Event, frozen=True, kw_only=True, tag="transcode.sealed"):
    output_dir: str  # relative to the backup root
    files: list[SealedFile]


class RecordingQuarantined(Event, frozen=True, kw_only=True, tag="transcode.quarantined"):
    reason: str


TranscodeEvent = RecordingSealed | RecordingQuarantined
EVENTS: tuple[type[Event], ...] = (RecordingSealed, RecordingQuarantined)
