"""What an interrupted upload needs to go on where it stopped, beside the backup.

One small JSON document per recording, ``<tenant>/<rid>/upload-state.json`` in the backup folder,
or in the backup store when that is an object store (so that another uploader instance, on another
machine, resumes what a killed one began: the lease makes it one job per recording at a time). It
maps
``<destination id> <remote key>`` to what the adapter chose to keep (an S3 upload id, a GCS
session URI, an FTP temporary name...), together with the sealed SHA-256 and size it belongs to,
so state made for other bytes is never reused. Written atomically (temp file, fsync, rename; an
object store's put is atomic by itself), so a kill -9 leaves the old or the new version, never
half of one. An entry is removed once its file is
confirmed; the file goes when it is empty. It never holds a secret.

A GCS session URI is a bearer capability for that one upload (it lets anyone who holds it write
that object until the session ends, about a week): it lives only in the backup folder, which is
the operator's, and is gone once the file is confirmed. Losing the state is never worse than
starting that file again: a write the store refuses is logged and the upload goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from shared.backupstore import BackupStore, BackupStoreError
from shared.events.transcodes import SealedFile

FILE_NAME = "upload-state.json"
log = logging.getLogger(__name__)


class ResumeStore:
    """The resume entries of one recording (one uploader job at a time per recording), in the
    recording's backup folder (``folder``), or at ``key`` in an object store."""

    def __init__(
        self, folder: Path | None, *, store: BackupStore | None = None, key: str = ""
    ) -> None:
        self.path = folder / FILE_NAME if folder is not None and store is None else None
        self.store = store
        self.key = f"{key}/{FILE_NAME}"

    async def _read(self) -> dict[str, Any]:
        try:
            if self.store is not None:  # none there yet: ObjectMissing, caught below
                raw = await self.store.read_bytes(self.key)
            elif self.path is not None:
                raw = await asyncio.to_thread(self.path.read_bytes)
            else:
                return {}
            data = json.loads(raw)
        except (FileNotFoundError, ValueError, OSError, BackupStoreError):
            return {}
        return data if isinstance(data, dict) else {}

    async def _write(self, data: dict[str, Any]) -> None:
        if self.store is not None:
            try:
                if data:
                    await self.store.put_bytes(self.key, json.dumps(data, sort_keys=True).encode())
                else:
                    await self.store.delete(self.key)
            except BackupStoreError as exc:
                log.warning("upload resume state not kept", extra={"reason": str(exc)})
            return
        if self.path is not None:
            await asyncio.to_thread(self._write_file, self.path, data)

    @staticmethod
    def _write_file(path: Path, data: dict[str, Any]) -> None:
        if not path.parent.exists():
            return
        if not data:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        tmp = path.with_name(f".{FILE_NAME}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def slot(self, destination_id: str, key: str, sealed: SealedFile) -> ResumeSlot:
        return ResumeSlot(self, f"{destination_id} {key}", sealed)


class ResumeSlot:
    """One file's entry: ``load`` gives what ``save`` kept for these same sealed bytes."""

    def __init__(self, store: ResumeStore, name: str, sealed: SealedFile) -> None:
        self.store = store
        self.name = name
        self.sealed = sealed

    async def load(self, kind: str) -> dict[str, Any] | None:
        entry = (await self.store._read()).get(self.name)
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

    async def save(self, kind: str, state: dict[str, Any]) -> None:
        data = await self.store._read()
        data[self.name] = {
            "kind": kind,
            "sha256": self.sealed.sha256,
            "size": self.sealed.size,
            "state": state,
        }
        await self.store._write(data)

    async def clear(self) -> None:
        data = await self.store._read()
        if data.pop(self.name, None) is not None:
            await self.store._write(data)


def detached(sealed: SealedFile) -> ResumeSlot:
    """A slot that keeps nothing (benchmarks, tools): every upload starts from the beginning."""
    return ResumeStore(None).slot("", "", sealed)
