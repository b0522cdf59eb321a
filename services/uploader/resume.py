"""What an interrupted upload needs to go on where it stopped, on disk beside the backup.

One small JSON file per recording, ``<backup>/<tenant>/<rid>/upload-state.json``, maps
``<destination id> <remote key>`` to what the adapter chose to keep (an S3 upload id, a GCS
session URI, an FTP temporary name...), together with the sealed SHA-256 and size it belongs to,
so state made for other bytes is never reused. Written atomically (temp file, fsync, rename), so a
kill -9 leaves the old or the new version, never half of one. An entry is removed once its file is
confirmed; the file goes when it is empty. It never holds a secret.

A GCS session URI is a bearer capability for that one upload (it lets anyone who holds it write
that object until the session ends, about a week): it lives only in the backup folder, which is
the operator's, and is gone once the file is confirmed.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from shared.events.transcodes import SealedFile

FILE_NAME = "upload-state.json"


class ResumeStore:
    """The resume entries of one recording (one uploader job at a time per recording)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / FILE_NAME if folder is not None else None

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError, OSError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        if self.path is None or not self.path.parent.exists():
            return
        if not data:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        tmp = self.path.with_name(f".{FILE_NAME}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def slot(self, destination_id: str, key: str, sealed: SealedFile) -> ResumeSlot:
        return ResumeSlot(self, f"{destination_id} {key}", sealed)


class ResumeSlot:
    """One file's entry: ``load`` gives what ``save`` kept for these same sealed bytes."""

    def __init__(self, store: ResumeStore, name: str, sealed: SealedFile) -> None:
        self.store = store
        self.name = name
        self.sealed = sealed

    def load(self, kind: str) -> dict[str, Any] | None:
        entry = self.store._read().get(self.name)
        if (
            not isinstance(entry, dict)
            or entry.get("kind") != kind
            or entry.get("sha256") != self.sealed.sha256
            or entry.get("size") != self.sealed.size
            or not isinstance(entry.get("state"), dict)
        ):
            return None
        state: dict[str, Any] = entry["state"]
        return state

    def save(self, kind: str, state: dict[str, Any]) -> None:
        data = self.store._read()
        data[self.name] = {
            "kind": kind,
            "sha256": self.sealed.sha256,
            "size": self.sealed.size,
            "state": state,
        }
        self.store._write(data)

    def clear(self) -> None:
        data = self.store._read()
        if data.pop(self.name, None) is not None:
            self.store._write(data)


def detached(sealed: SealedFile) -> ResumeSlot:
    """A slot that keeps nothing (benchmarks, tools): every upload starts from the beginning."""
    return ResumeStore(None).slot("", "", sealed)
