"""Local-folder adapter (development): copy under ``path``, fsync, re-hash the copy to confirm.

The copy is written to a temporary name beside the target, checked against the sealed SHA-256
while it is written (one pass over the backup), fsynced, renamed into place, and the directory
fsynced; then the final file is read again and hashed: that is the confirmation.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Any

from shared.backup import UnsafePath, inside
from shared.events.transcodes import SealedFile
from shared.events.uploads import RemoteFile
from shared.integrity import digest_file

from .errors import PermanentUploadError, TransientUploadError
from .resume import ResumeSlot
from .source import Source, as_source

CHUNK = 1 << 20
_PERMANENT_ERRNO = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBackend:
    def __init__(self, config: dict[str, Any]) -> None:
        self.root = Path(str(config["path"])).expanduser()
        # Either verify mode re-reads the final file: a local copy has no provider checksum.

    async def close(self) -> None:
        return None

    def _error(self, exc: OSError, name: str) -> Exception:
        what = f"could not write {name} under the destination folder ({type(exc).__name__})"
        if exc.errno in _PERMANENT_ERRNO:
            return PermanentUploadError(f"{what}; check the folder's path and permissions")
        return TransientUploadError(f"{what}; it will be retried")

    async def delete(self, key: str) -> None:
        """Remove the file at ``key`` under the folder (a missing one is fine); the folders the
        key made stay (others' files may be in them)."""
        name = key.rsplit("/", 1)[-1]
        if not self.root.is_absolute():
            raise PermanentUploadError(
                "the file destination's path must be absolute; fix the destination"
            )
        try:
            target = inside(self.root, key)
        except UnsafePath:
            raise PermanentUploadError(
                f"the remote key of {name} leaves the destination folder; "
                "fix the destination's prefix or key_template"
            ) from None
        try:
            await asyncio.to_thread(target.unlink, missing_ok=True)
            await asyncio.to_thread(_fsync_dir, target.parent)
        except FileNotFoundError:
            return  # the folder is gone too
        except OSError as exc:
            what = f"could not delete {name} under the destination folder ({type(exc).__name__})"
            if exc.errno in _PERMANENT_ERRNO:
                raise PermanentUploadError(
                    f"{what}; check the folder's path and permissions"
                ) from None
            raise TransientUploadError(f"{what}; it will be retried") from None

    async def upload(
        self, source: Source | Path, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> RemoteFile:
        local = as_source(source, sealed)
        await local.check()
        if not self.root.is_absolute():
            raise PermanentUploadError(
                "the file destination's path must be absolute; fix the destination"
            )
        try:
            target = inside(self.root, key)
        except UnsafePath:
            raise PermanentUploadError(
                f"the remote key of {sealed.name} leaves the destination folder; "
                "fix the destination's prefix or key_template"
            ) from None
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
        try:
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            reader = local.reader(CHUNK)
            fh = await asyncio.to_thread(tmp.open, "wb")
            try:
                async for chunk in reader.chunks():
                    await asyncio.to_thread(fh.write, chunk)
                await asyncio.to_thread(fh.flush)
                await asyncio.to_thread(os.fsync, fh.fileno())
            finally:
                fh.close()
            reader.verify()  # a changed backup never takes the final name
            await asyncio.to_thread(os.replace, tmp, target)
            await asyncio.to_thread(_fsync_dir, target.parent)
            copy = await asyncio.to_thread(digest_file, target)
        except OSError as exc:
            raise self._error(exc, sealed.name) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if copy.sha256 != sealed.sha256 or copy.size != sealed.size:
            raise TransientUploadError(
                f"the copy of {sealed.name} in the destination folder reads back differently; "
                "it will be written again"
            )
        return RemoteFile(
            name=sealed.name,
            uri=target.as_uri(),
            size=copy.size,
            sha256=copy.sha256,
            checksum_algorithm="SHA256",
            checksum=copy.sha256,
        )
