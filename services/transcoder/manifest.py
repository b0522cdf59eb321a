"""Pure: the recording's manifest.json and the file list of the sealed event."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.events.transcodes import FileRole, SealedFile
from shared.integrity import FileDigest

from .composite import CompositePlan
from .plan import FilePlan, OutputOptions
from .state import RecordingCapture

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
SUMS_NAME = "SHA256SUMS"
MANIFEST_FORMAT = "resguardo.recording"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class MediaFile:
    plan: FilePlan | CompositePlan
    digest: FileDigest
    duration_s: float


def iso(ns: int | None) -> str | None:
    """ISO 8601 UTC with milliseconds, e.g. "2026-11-29T12:00:00.123Z"."""
    if ns is None:
        return None
    dt = datetime.fromtimestamp(ns // 1000 / 1_000_000, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _participants(state: RecordingCapture, files: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    people = sorted(
        state.participants.values(),
        key=lambda p: (min((s.joined_at_ns for s in p.sessions), default=0), p.participant_id),
    )
    for p in people:
        joins = [s.joined_at_ns for s in p.sessions]
        leaves = [s.left_at_ns for s in p.sessions]
        still_in = any(v is None for v in leaves)
        out.append(
            {
                "participant_id": p.participant_id,
                "display_name": p.display_name,
                "joined_at": iso(min(joins)) if joins else None,
                "left_at": None if still_in or not leaves else iso(max(v for v in leaves if v)),
                "sessions": [
                    {
                        "session_id": s.session_id,
                        "joined_at": iso(s.joined_at_ns),
                        "left_at": iso(s.left_at_ns),
                        "leave_reason": s.leave_reason,
                    }
                    for s in p.sessions
                ],
                "file": files.get(p.participant_id),
            }
        )
    return out


def _tracks(plan: FilePlan | CompositePlan) -> list[dict[str, Any]]:
    if isinstance(plan, FilePlan):
        members = [(plan, 0)]
    else:
        members = [(m.plan, m.offset_ms) for m in plan.members]
    return [
        {
            **({"participant_id": p.participant_id} if isinstance(plan, CompositePlan) else {}),
            "track_id": t.track_id,
            "session_id": t.session_id,
            "kind": s.kind,
            "codec": t.codec,
            "starts_at_s": (offset + t.start_ms) / 1000,
            "ends_at_s": (offset + t.end_ms) / 1000,
            # "sender_report": placed by the sender's own clock (RTCP); "arrival": the sender
            # sent no report, so by when its frames reached the proxy
            "alignment": t.alignment,
            **({"clock_drift_ppm": t.drift_ppm} if t.alignment == "sender_report" else {}),
        }
        for p, offset in members
        for s in p.streams
        for t in s.tracks
    ]


def _file_entry(m: MediaFile) -> dict[str, Any]:
    plan = m.plan
    return {
        "name": plan.name,
        "participant_id": plan.participant_id,
        "content_type": plan.content_type,
        "size": m.digest.size,
        "sha256": m.digest.sha256,
        "crc32": m.digest.crc32,
        "duration_s": round(m.duration_s, 3),
        "codecs": plan.codecs,
        "starts_at": iso(plan.t0_ns),
        "starts_at_ns": plan.t0_ns,
        "tracks": _tracks(plan),
        "source_segments": [
            {"path": seg.path, "sha256": seg.sha256, "size": seg.size} for seg in plan.segments
        ],
    }


def build_manifest(
    state: RecordingCapture,
    media: list[MediaFile],
    *,
    signing_key_id: str = "",
    options: OutputOptions | None = None,
) -> dict[str, Any]:
    """Everything a recipient needs to check and place the files; no clock of its own, so a
    re-run over the same capture writes the same bytes. ``manifest.json.sig`` signs these
    bytes with the key named by ``signing_key_id``."""
    options = options or OutputOptions()
    files = {m.plan.participant_id: m.plan.name for m in media if m.plan.participant_id}
    joins = [s.joined_at_ns for p in state.participants.values() for s in p.sessions]
    leaves = [s.left_at_ns for p in state.participants.values() for s in p.sessions if s.left_at_ns]
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "recording_id": state.recording_id,
        "tenant_id": state.tenant_id,
        "started_at": iso(min(joins)) if joins else None,
        "ended_at": iso(max(leaves)) if leaves else None,
        "participants": _participants(state, files),
        "output": {"format": options.format, "tracks": options.tracks},
        "files": [_file_entry(m) for m in media],
        "checksums": SUMS_NAME,
        "signature": SIGNATURE_NAME,
        "signing_key_id": signing_key_id,
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()


def sealed_files(
    media: list[MediaFile],
    sums: FileDigest,
    manifest: FileDigest,
    signature: FileDigest,
    stored_as: dict[str, str] | None = None,
) -> list[SealedFile]:
    """The event's file list; ``stored_as`` maps a media file's name to its name in the backup
    (sidecars keep theirs: they say nothing of the call)."""
    stored = stored_as or {}
    files = [
        SealedFile(
            name=m.plan.name,
            stored_as=stored.get(m.plan.name, msgspec.UNSET),
            role="media",
            size=m.digest.size,
            sha256=m.digest.sha256,
            crc32=m.digest.crc32,
            participant_id=m.plan.participant_id,
            duration_s=round(m.duration_s, 3),
            content_type=m.plan.content_type,
        )
        for m in media
    ]
    sidecars: tuple[tuple[str, FileRole, FileDigest, str], ...] = (
        (SUMS_NAME, "checksums", sums, "text/plain; charset=utf-8"),
        (MANIFEST_NAME, "manifest", manifest, "application/json"),
        (SIGNATURE_NAME, "signature", signature, "text/plain; charset=us-ascii"),
    )
    for name, role, digest, content_type in sidecars:
        files.append(
            SealedFile(
                name=name,
                role=role,
                size=digest.size,
                sha256=digest.sha256,
                crc32=digest.crc32,
                content_type=content_type,
            )
        )
    return files
