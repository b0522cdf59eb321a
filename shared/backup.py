"""The temporary backup store's layout: one folder per recording, nothing outside it.

    <root>/<tenant_id>/<recording_id>/capture/<participant>/<track>/<seq>.rgc
        (``participant`` and ``track`` are pseudonyms: ``pseudonym``)
    <root>/<tenant_id>/<recording_id>/output-<attempt>/<file>   (the sealed event names it)

Every path is built from validated ids and checked to stay under the recording's folder, so no
id or name from outside can reach another recording's files.
"""

from __future__ import annotations

import hmac
from hashlib import sha256
from pathlib import Path

from .ids import TENANT_ID_RE, is_recording_id, is_safe_name


class UnsafePath(ValueError):
    pass


def recording_dir(root: Path, tenant_id: str, recording_id: str) -> Path:
    if not TENANT_ID_RE.match(tenant_id):
        raise UnsafePath(f"tenant id {tenant_id!r} is not valid")
    if not is_recording_id(recording_id):
        raise UnsafePath(f"recording id {recording_id!r} is not valid")
    return root / tenant_id / recording_id


def inside(base: Path, relative: str) -> Path:
    """``base / relative``, refusing anything that would resolve outside ``base``."""
    if "\x00" in relative or relative.startswith(("/", "\\")):
        raise UnsafePath(f"path {relative!r} is not a relative path")
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base.resolve()):
        raise UnsafePath(f"path {relative!r} leaves its recording folder")
    return candidate


def capture_dir(rec_dir: Path, participant_id: str, track_id: str) -> Path:
    for part in (participant_id, track_id):
        if not is_safe_name(part):
            raise UnsafePath(f"name {part!r} is not a safe path segment")
    return rec_dir / "capture" / participant_id / track_id


def pseudonym(key: bytes | bytearray, value: str) -> str:
    """The folder name that stands for ``value`` (a participant or track id) in the backup.

    Who was on a call is itself private, and folder names and object keys are not encrypted: the
    name is a keyed hash under the recording's data key, so it is stable for whoever holds the
    key (the proxy across restarts, salvage) and says nothing to anyone else. Readers never
    compute it: events carry each segment's path.
    """
    mac = hmac.new(key, b"resguardo-backup-name\x00" + value.encode(), sha256)
    return "n" + mac.hexdigest()[:24]


def segment_name(seq: int) -> str:
    return f"{seq:06d}.rgc"


def output_dir(rec_dir: Path) -> Path:
    return rec_dir / "output"
