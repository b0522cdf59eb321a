"""This machine's backup folder in front of the shared backup store.

Services keep working on files under the backup folder (``RESGUARDO_BACKUP_DIR``), laid out as
``shared.backup`` says. With the default store, the local folder *is* the store, and every method
here does nothing beyond what the folder already is. With an object store
(``RESGUARDO_BACKUP_URL=s3://...``) the folder is only a spool: a file that is finished is put in
the store (its SHA-256 checked, the store's CRC-32 too) and dropped here; a file that another
machine wrote is fetched, and verified, before it is used; a purge deletes every object of the
recording and then the local leftovers. No service ever reads another machine's disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .base import BackupStore
from .errors import ChecksumMismatch, ObjectMissing

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, root: Path, store: BackupStore) -> None:
        self.root = Path(root).resolve()
        self.store = store
        store_root = getattr(store, "root", None)
        # The local store on this very folder: files written here are already "in the store".
        self.remote = store_root is None or Path(store_root).resolve() != self.root

    def key(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    async def keep(self, path: Path, *, sha256: str, drop_local: bool = True) -> None:
        """Put a finished file in the store (verified), then drop the local copy."""
        if not self.remote:
            return
        await self.store.put_file(self.key(path), path, sha256=sha256)
        if drop_local:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)

    async def fetch(self, path: Path, *, sha256: str | None) -> None:
        """Make sure ``path`` is here with content ``sha256``, from the store if need be.

        ``sha256`` None: the file is encrypted (``shared.chunkcrypt``), its events know only the
        plaintext's hash, and the reader verifies it as it decrypts; the store's own checksum
        still guards the copy in transit."""
        if not self.remote:
            return
        if await asyncio.to_thread(_has, path, sha256):
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.fetch")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as fh:
                async for chunk in self.store.open_read(self.key(path)):
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ChecksumMismatch(
                    f"{self.key(path)} in the backup store is not the one that was recorded"
                )
            await asyncio.to_thread(tmp.replace, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def fetch_all(self, files: Iterable[tuple[Path, str | None]]) -> None:
        for path, sha256 in files:
            await self.fetch(path, sha256=sha256)

    async def drop_local(self, folder: Path) -> None:
        """Forget this machine's copies under ``folder`` (they are in the store)."""
        if self.remote:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def purge(self, rec_dir: Path) -> tuple[int, int]:
        """Delete every object of the recording, then what is left of it locally; returns the
        objects and bytes the store held (nothing for the local store: the caller's folder)."""
        objects = size = 0
        if self.remote:
            prefix = self.key(rec_dir)
            size = sum(o.size for o in await self.store.list(prefix))
            objects = await self.store.delete_prefix(prefix)
        await asyncio.to_thread(shutil.rmtree, rec_dir, True)
        return objects, size

    async def exists(self, path: Path) -> bool:
        if not self.remote:
            return await asyncio.to_thread(path.exists)
        return await self.store.stat(self.key(path)) is not None

    async def close(self) -> None:
        await self.store.close()


def _has(path: Path, sha256: str | None) -> bool:
    if sha256 is None:
        return path.is_file()
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest() == sha256
    except FileNotFoundError:
        return False


__all__ = ["ObjectMissing", "Spool"]
