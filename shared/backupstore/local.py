"""The backup in a local folder: the embedded default, and what one machine needs.

Writes are atomic: bytes go to a hidden temp file beside the target, are fsynced, and only then
renamed over it (and the folder fsynced), so a reader or a crash sees the old object or the new
one, never a torn one. A file whose SHA-256 is wrong is never renamed into place.

Digests live in a sidecar (``.<name>.meta``, hidden: keys cannot start with a dot, so no key can
collide with one, and listings skip them) rather than being recomputed, because:

- the SHA-256 is what the object was *stored with*: a later read can detect damage against it,
  whereas recomputing would take a damaged file as its own reference;
- ``stat``/``list`` stay cheap (a recording is gigabytes; ``resguardo status`` must not read it);
- extended attributes would be atomic with the file but are missing on some filesystems.

The sidecar records the data file's inode and size, which the rename preserves: a sidecar left
from an older version (a crash between the two renames, or a file replaced by hand) no longer
matches, and the digests are then reported as unknown (None) instead of wrong.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import json
import os
import secrets
import shutil
import stat as statmod
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from ..backup import UnsafePath, inside
from ..integrity import CHUNK, Digest
from .base import StoredObject, b64_crc32, check_key, check_prefix, tally
from .blocking import BlockingRead
from .errors import (
    BackupStoreError,
    ChecksumMismatch,
    ObjectMissing,
    StoreRefused,
    StoreUnavailable,
    UnsafeKey,
)

# Conditions that pass (space freed, the disk or NFS server back): worth trying again later.
TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY}
TRANSIENT_ERRNOS |= {errno.EINTR, errno.ENOMEM, errno.ETIMEDOUT, errno.ESTALE}
CHECK_TIMEOUT = 5.0


def _os_error(exc: OSError, action: str, key: str) -> BackupStoreError:
    code = errno.errorcode.get(exc.errno or 0, "error")
    what = f"the local backup folder could not {action} {key} ({code}: {exc.strerror})"
    if exc.errno in TRANSIENT_ERRNOS:
        return StoreUnavailable(f"{what}; it will work again once that is fixed")
    return StoreRefused(f"{what}; check the folder's permissions and layout")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.meta")


def _read_source(path: Path) -> Iterator[bytes]:
    """The caller's file in chunks; its errors are the caller's, not the store's."""
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
    except OSError as exc:
        raise BackupStoreError(
            f"the local file {path} could not be read ({exc.strerror})"
        ) from None


class LocalBackupStore:
    """``BackupStore`` on a folder: ``<root>/<key>``, with the layout of ``shared/backup.py``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()  # as ``inside`` resolves the paths it checks

    def __repr__(self) -> str:
        return f"LocalBackupStore({str(self.root)!r})"

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        check_key(key)
        try:
            return inside(self.root, key)  # also refuses a symlink out of the folder
        except UnsafePath as exc:
            raise UnsafeKey(str(exc)) from None

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, each made durable in its parent."""
        missing = []
        probe = folder
        while not probe.is_dir():
            missing.append(probe)
            if probe == probe.parent:
                break
            probe = probe.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir()
            _fsync_dir(path.parent)

    async def put_file(self, key: str, local_path: Path, *, sha256: str) -> StoredObject:
        return await asyncio.to_thread(self._put, key, _read_source(Path(local_path)), sha256)

    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str | None = None, crc32: int | None = None
    ) -> StoredObject:
        return await asyncio.to_thread(self._put, key, iter((data,)), sha256, crc32)

    def _put(
        self, key: str, chunks: Iterator[bytes], sha256: str | None, crc: int | None = None
    ) -> StoredObject:
        dest = self._path(key)
        try:
            self._make_dirs(dest.parent)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        except OSError as exc:
            raise _os_error(exc, "make room for", key) from None
        tmp = Path(tmp_name)
        side_tmp = tmp.with_suffix(".meta-tmp")
        try:
            digest = Digest()
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                ino = os.fstat(out.fileno()).st_ino
            if sha256 is not None and digest.sha256 != sha256:
                raise ChecksumMismatch(
                    f"the bytes for {key} do not match their SHA-256 (got {digest.sha256[:12]}..., "
                    f"expected {sha256[:12]}...); nothing was stored"
                )
            if crc is not None and digest.crc32 != crc:
                raise ChecksumMismatch(f"the bytes for {key} do not match their CRC-32")
            obj = StoredObject(key, digest.size, digest.sha256, b64_crc32(digest.crc32))
            meta = {"sha256": obj.sha256, "crc32": obj.crc32, "size": obj.size, "ino": ino}
            with side_tmp.open("w") as fh:
                json.dump(meta, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
            os.replace(side_tmp, _sidecar(dest))
            _fsync_dir(dest.parent)
            return obj
        except OSError as exc:
            raise _os_error(exc, "store", key) from None
        finally:
            for leftover in (tmp, side_tmp):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _describe(self, key: str, path: Path, digests: bool = True) -> StoredObject | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _os_error(exc, "look at", key) from None
        if not statmod.S_ISREG(st.st_mode):
            return None
        if not digests:
            return StoredObject(key, st.st_size)
        try:
            meta = json.loads(_sidecar(path).read_text())
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and meta.get("ino") == st.st_ino:
            if meta.get("size") == st.st_size:
                return StoredObject(key, st.st_size, meta.get("sha256"), meta.get("crc32"))
        return StoredObject(key, st.st_size)  # not stored by us, or torn: digests unknown

    async def stat(self, key: str) -> StoredObject | None:
        return await asyncio.to_thread(self._describe, key, self._path(key))

    async def open_read(self, key: str, *, start: int = 0) -> AsyncIterator[bytes]:
        if start < 0:
            raise ValueError("start must not be negative")
        path = self._path(key)
        fh = await asyncio.to_thread(self._open_at, key, path, start)
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(fh.read, CHUNK)
                except OSError as exc:
                    raise _os_error(exc, "read", key) from None
                if not chunk:
                    return
                yield chunk
        finally:
            fh.close()

    async def open_blocking(self, key: str, *, start: int = 0) -> BlockingRead:
        if start < 0:
            raise ValueError("start must not be negative")
        fh = await asyncio.to_thread(self._open_at, key, self._path(key), start)
        return cast(BlockingRead, fh)  # a file opened "rb" reads into buffers as it should

    def _open_at(self, key: str, path: Path, start: int) -> BinaryIO:
        try:
            fh = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectMissing(f"the backup holds nothing at {key}") from None
        except OSError as exc:
            raise _os_error(exc, "open", key) from None
        size = os.fstat(fh.fileno()).st_size
        if start > size:
            fh.close()
            raise BackupStoreError(f"cannot read {key} from byte {start}: it holds {size} bytes")
        fh.seek(start)
        return fh

    async def read_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.open_read(key)])

    def _walk(self, prefix: str, digests: bool = True) -> builtins.list[StoredObject]:
        base = self._path(prefix) if prefix else self.root
        found: builtins.list[StoredObject] = []

        def failed(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                raise _os_error(exc, "list", prefix or "the backup") from None

        for folder, dirs, files in os.walk(base, onerror=failed):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                obj = self._describe(key, Path(folder, name), digests)
                if obj is not None:
                    found.append(obj)
        return sorted(found, key=lambda o: o.key)

    async def list(self, prefix: str = "") -> builtins.list[StoredObject]:
        return await asyncio.to_thread(self._walk, check_prefix(prefix))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key, self._path(key))

    def _delete(self, key: str, path: Path) -> None:
        # Emptied folders stay: removing them could race a put creating a sibling's folder.
        try:
            for victim in (path, _sidecar(path)):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    victim.unlink()
        except OSError as exc:
            raise _os_error(exc, "delete", key) from None

    async def delete_prefix(self, prefix: str) -> int:
        prefix = check_prefix(prefix)
        if not prefix:
            raise UnsafeKey("refusing to delete the whole backup: give a tenant or recording")
        return await asyncio.to_thread(self._delete_tree, prefix, self._path(prefix))

    def _delete_tree(self, prefix: str, path: Path) -> int:
        """Rename the folder out of sight first (one atomic step: nothing under it is visible
        from then on, even if the process dies mid-way), then remove it. What an earlier,
        interrupted purge left hidden beside it is removed as well."""
        count = len(self._walk(prefix, digests=False))
        if not path.is_dir():
            return count
        hidden = path.with_name(f".{path.name}.deleting-{secrets.token_hex(4)}")
        for stale in path.parent.glob(f".{path.name}.deleting-*"):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(path, hidden)
            _fsync_dir(path.parent)
            shutil.rmtree(hidden)
        except OSError as exc:
            raise _os_error(exc, "delete", prefix) from None
        return count

    async def usage_by_tenant(self) -> dict[str, int]:
        return tally(await asyncio.to_thread(self._walk, "", False))  # sizes only: no sidecars

    async def check(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._probe), CHECK_TIMEOUT)
        except TimeoutError:
            raise StoreUnavailable(
                f"the local backup folder {self.root} did not answer within {CHECK_TIMEOUT:.0f} s"
            ) from None

    def _probe(self) -> None:
        """Create the folder and write (and remove) a file in it: proves it is usable now."""
        try:
            self._make_dirs(self.root)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".check-") as fh:
                fh.write(b"ok")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _os_error(exc, "write to", str(self.root)) from None

    async def close(self) -> None:
        return None
