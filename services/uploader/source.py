"""Where an upload reads a sealed file from: this machine's backup folder, or the backup store.

Every adapter reads its file through a ``Source`` in one streaming pass, with bounded memory,
hashing SHA-256 as it goes (and the provider's checksum in the same worker-thread call), and
calls ``verify()`` before the remote object may become visible:

- ``LocalSource``: a file in the backup folder (the embedded default, where the folder is the
  store).
- ``StoreSource``: an object in the shared backup store (``RESGUARDO_BACKUP_URL=s3://...``),
  streamed straight to the destination: nothing is spooled on this machine. A stream broken
  half-way (a store node restarting, a reset connection) is picked up where it stopped with a
  range read, so a 10 GiB file is not read again from the start for one hiccup.

The backup is encrypted at rest (``shared.chunkcrypt``): with a ``Crypt`` (the recording's key,
held for this job), a reader decrypts as it reads and every byte it hands on has authenticated;
the SHA-256 it checks is the plaintext's, as sealed. A range-read resume starts at the chunk that
holds the byte where the stream broke. Files written before encryption are read as they are.

Adapters import from here, never from ``backend.py`` (the registry that imports them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from shared import chunkcrypt
from shared.backupstore import BackupStore, BackupStoreError, ObjectMissing
from shared.backupstore.blocking import BlockingRead
from shared.events.transcodes import SealedFile

from .backupcrypt import Crypt, Prefixed, plain_size, read_exactly
from .errors import LocalIntegrityError, PermanentUploadError, TransientUploadError

T = TypeVar("T")
STEP = 256 * 1024  # well inside a core's L2 cache
STREAM_RETRIES = 5  # broken store streams picked up again within one upload attempt
log = logging.getLogger(__name__)


class ChunkReader(Protocol):
    sealed: SealedFile
    size: int

    def chunks(self) -> AsyncIterator[bytes]: ...

    def chunks_with(self, fn: Callable[[bytes], T]) -> AsyncIterator[tuple[bytes, T]]: ...

    def chunks_into(
        self, buffers: Buffers, fn: Callable[[memoryview], T]
    ) -> AsyncIterator[tuple[memoryview, T]]: ...

    def verify(self) -> None: ...


class Source(Protocol):
    """One sealed file to send, wherever it lives."""

    sealed: SealedFile

    async def check(self) -> None:
        """Fail fast, before any byte is sent, when the file is missing or has the wrong size."""
        ...

    def reader(self, chunk: int) -> ChunkReader:
        """A fresh single pass over the file in chunks of ``chunk`` bytes (the last shorter)."""
        ...


def as_source(source: Source | Path, sealed: SealedFile) -> Source:
    """A plain path is a file in this machine's backup folder."""
    return LocalSource(source, sealed) if isinstance(source, Path) else source


def mismatch(sealed: SealedFile, size: int) -> LocalIntegrityError:
    return LocalIntegrityError(
        f"backup file {sealed.name} no longer matches its sealed SHA-256 ({size} bytes read); "
        "it changed at rest and is not sent as good (retained for an operator)"
    )


def tampered(sealed: SealedFile, exc: Exception) -> LocalIntegrityError:
    return LocalIntegrityError(
        f"backup file {sealed.name} fails authentication ({exc}); it was changed at rest and "
        "is not sent (retained for an operator)"
    )


def _wrong_size(sealed: SealedFile, size: int) -> LocalIntegrityError:
    return LocalIntegrityError(
        f"backup file {sealed.name} is {size} bytes but was sealed at {sealed.size}; it "
        "changed at rest and is not sent (retained for an operator)"
    )


class Buffers:
    """Chunk buffers reused across chunks; never more than ``most`` at once (the memory bound)."""

    def __init__(self, size: int, most: int) -> None:
        self.size = size
        self.most = most
        self._free: list[bytearray] = []
        self._made = 0

    def take(self) -> bytearray:
        if self._free:
            return self._free.pop()
        if self._made >= self.most:  # a caller bug: it holds more chunks than it said it would
            raise RuntimeError(f"all {self.most} chunk buffers are in use")
        self._made += 1
        return bytearray(self.size)

    def give(self, buf: object) -> None:
        """Take back a buffer (or a chunk's ``memoryview.obj``) whose bytes are done with."""
        assert isinstance(buf, bytearray) and len(buf) == self.size
        self._free.append(buf)


class _Hashing:
    """What both readers share: the running SHA-256 and byte count, and the final check."""

    def __init__(self, sealed: SealedFile, chunk: int) -> None:
        self.sealed = sealed
        self.chunk = chunk
        self.sha = hashlib.sha256()
        self.size = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        async for data, _ in self.chunks_with(_nothing):
            yield data

    def chunks_with(self, fn: Callable[[bytes], T]) -> AsyncIterator[tuple[bytes, T]]:
        raise NotImplementedError

    def _fill(self, fh: BlockingRead, view: memoryview, n: int) -> tuple[int, bool]:
        try:
            return self._fill_plain(fh, view, n)
        except chunkcrypt.ChunkCryptError as exc:
            raise tampered(self.sealed, exc) from None

    def _fill_plain(self, fh: BlockingRead, view: memoryview, n: int) -> tuple[int, bool]:
        """Fill ``view`` from byte ``n`` on, a STEP at a time: SHA-256 finds each piece still in
        the core's cache, not evicted by the rest of an 8 MiB read. ``self.size`` counts every
        byte hashed, so a stream broken at any point resumes at ``self.size``. Returns (bytes in
        view, whether this is the last chunk)."""
        while n < len(view):
            got = fh.readinto(view[n : n + STEP])
            if not got:
                return n, True
            self.sha.update(view[n : n + got])
            self.size += got
            n += got
        if self.size >= self.sealed.size:
            tail = fh.read(1)  # an object longer than sealed must still fail verify()
            self.sha.update(tail)
            self.size += len(tail)
            return n, True
        return n, False

    def verify(self) -> None:
        """After the last chunk: the bytes read are exactly the sealed ones."""
        if self.size != self.sealed.size or self.sha.hexdigest() != self.sealed.sha256:
            raise mismatch(self.sealed, self.size)


class LocalSource:
    def __init__(self, path: Path, sealed: SealedFile, crypt: Crypt | None = None) -> None:
        self.path = path
        self.sealed = sealed
        self.crypt = crypt

    async def check(self) -> None:
        try:
            size = (await asyncio.to_thread(self.path.stat)).st_size
        except FileNotFoundError:
            raise LocalIntegrityError(
                f"backup file {self.sealed.name} is missing; the recording is retained for an "
                "operator"
            ) from None
        except OSError as exc:
            raise TransientUploadError(
                f"backup file {self.sealed.name} could not be read ({type(exc).__name__})"
            ) from None
        if not plain_size(self.sealed, size, self.crypt):
            raise _wrong_size(self.sealed, size)

    def reader(self, chunk: int) -> LocalReader:
        return LocalReader(self.path, self.sealed, chunk, self.crypt)


class LocalReader(_Hashing):
    """Reads one file in chunks off the event loop, hashing SHA-256 as it goes: one pass, at
    most one chunk in memory."""

    def __init__(
        self, local: Path, sealed: SealedFile, chunk: int, crypt: Crypt | None = None
    ) -> None:
        super().__init__(sealed, chunk)
        self.local = local
        self.crypt = crypt

    async def chunks_with(self, fn: Callable[[bytes], T]) -> AsyncIterator[tuple[bytes, T]]:
        """Chunks with ``fn(chunk)`` (a provider's checksum), computed in the same worker-thread
        call that reads and hashes the chunk: the event loop never touches the bytes' math."""
        fh = await self._open()
        try:
            while True:
                data, extra = await asyncio.to_thread(self._read, fh, fn)
                if not data:
                    return
                yield data, extra
        finally:
            fh.close()

    async def _open(self) -> Any:
        try:
            return await asyncio.to_thread(self._open_plain)
        except FileNotFoundError:
            raise LocalIntegrityError(
                f"backup file {self.sealed.name} is missing; the recording is retained"
            ) from None

    def _open_plain(self) -> Any:
        fh = self.local.open("rb")
        if self.crypt is None or fh.read(len(chunkcrypt.MAGIC)) != chunkcrypt.MAGIC:
            fh.seek(0)
            return fh
        fh.seek(0)
        c = self.crypt
        chunks = chunkcrypt.decrypt_stream(fh, c.key, recording_id=c.recording_id, name=c.name)
        return chunkcrypt.PlainReader(chunks, raw=fh)

    def _read(self, fh: Any, fn: Callable[[bytes], T]) -> tuple[bytes, T]:
        try:
            data: bytes = fh.read(self.chunk)
        except chunkcrypt.ChunkCryptError as exc:
            raise tampered(self.sealed, exc) from None
        self.sha.update(data)
        self.size += len(data)
        return data, fn(data)

    async def chunks_into(
        self, buffers: Buffers, fn: Callable[[memoryview], T]
    ) -> AsyncIterator[tuple[memoryview, T]]:
        """``chunks_with``, but each chunk is read into a buffer taken from ``buffers`` (its
        ``obj``; the caller gives it back once done with the chunk), not into a new object:
        no 8 MiB allocation, page-faulted in and freed again, per chunk."""
        fh = await self._open()
        try:
            done = False
            while not done:
                buf = buffers.take()  # not given back on a failure: the thread may still fill it
                data, extra, done = await asyncio.to_thread(self._read_into, fh, buf, fn)
                if not data:
                    buffers.give(buf)
                    return
                yield data, extra
        finally:
            fh.close()

    def _read_into(
        self, fh: Any, buf: bytearray, fn: Callable[[memoryview], T]
    ) -> tuple[memoryview, T, bool]:
        """One chunk, and whether it is the last (so no buffer is taken just to find the end)."""
        n, last = self._fill(fh, memoryview(buf), 0)
        data = memoryview(buf)[:n]
        return data, fn(data), last


class StoreSource:
    """A sealed file in the backup store, streamed without a local copy."""

    def __init__(
        self, store: BackupStore, key: str, sealed: SealedFile, crypt: Crypt | None = None
    ) -> None:
        self.store = store
        self.key = key
        self.sealed = sealed
        self.crypt = crypt

    async def check(self) -> None:
        try:
            obj = await self.store.stat(self.key)
        except BackupStoreError as exc:
            raise store_error(exc, self.sealed) from None
        if obj is None:
            raise LocalIntegrityError(
                f"backup file {self.sealed.name} is missing from the backup store; the recording "
                "is retained for an operator"
            )
        if not plain_size(self.sealed, obj.size, self.crypt):
            raise _wrong_size(self.sealed, obj.size)
        # The store's hash is of the bytes it holds: the plaintext's only for an old object.
        plain = obj.size == self.sealed.size and self.crypt is None
        if plain and obj.sha256 is not None and obj.sha256 != self.sealed.sha256:
            raise mismatch(self.sealed, obj.size)

    def reader(self, chunk: int) -> StoreReader:
        return StoreReader(self.store, self.key, self.sealed, chunk, self.crypt)


class StoreReader(_Hashing):
    """One pass over an object of the store, in chunks of exactly ``chunk`` bytes (the last
    shorter): read in a worker thread straight into the caller's buffers (``open_blocking``),
    hashed a STEP at a time as the local folder's files are. A stream that breaks is opened
    again from the byte where it stopped (a range read), into the same buffer."""

    def __init__(
        self,
        store: BackupStore,
        key: str,
        sealed: SealedFile,
        chunk: int,
        crypt: Crypt | None = None,
    ) -> None:
        super().__init__(sealed, chunk)
        self.store = store
        self.key = key
        self.crypt = crypt
        self.resumed = 0  # how often a broken stream was picked up again (for tests and logs)
        self._fh: BlockingRead | None = None
        self._header: bytes | None = None  # the encrypted file's, kept to resume mid-file
        self._encrypted: bool | None = None  # known once the first bytes were read

    async def _open_at(self, offset: int) -> BlockingRead:
        """The object's plaintext from byte ``offset``, verified as it is read."""
        c = self.crypt
        if c is None or self._encrypted is False:
            return await self.store.open_blocking(self.key, start=offset)
        if self._encrypted is None:  # the first open: look at the header
            raw = await self.store.open_blocking(self.key, start=0)
            head = await asyncio.to_thread(read_exactly, raw, chunkcrypt.HEADER_SIZE)
            if not head.startswith(chunkcrypt.MAGIC):
                self._encrypted = False
                return Prefixed(head, raw)
            self._encrypted, self._header = True, head
        else:  # a resume: the range read starts at the chunk holding ``offset``
            raw = await self.store.open_blocking(self.key, start=chunkcrypt.chunk_start(offset))
        assert self._header is not None
        chunks = chunkcrypt.decrypt_from(
            raw, c.key, recording_id=c.recording_id, name=c.name, header=self._header, offset=offset
        )
        return chunkcrypt.PlainReader(chunks, raw=raw)

    async def _next(self, buf: bytearray) -> tuple[int, bool]:
        view, start, failures = memoryview(buf), self.size, 0
        while True:
            try:
                if self._fh is None:
                    self._fh = await self._open_at(self.size)
                # After a break the buffer holds what was hashed so far: go on from there.
                return await asyncio.to_thread(self._fill, self._fh, view, self.size - start)
            except (BackupStoreError, OSError) as exc:
                await asyncio.to_thread(self._drop)
                failures += 1
                transient = not isinstance(exc, BackupStoreError) or exc.transient
                if not transient or failures > STREAM_RETRIES:
                    if isinstance(exc, BackupStoreError):
                        raise store_error(exc, self.sealed) from None
                    raise TransientUploadError(
                        f"backup file {self.sealed.name} could not be read from the backup "
                        f"store ({type(exc).__name__})"
                    ) from None
                self.resumed += 1
                log.info(
                    "backup stream broken; resuming with a range read",
                    extra={"file": self.sealed.name, "offset": self.size},
                )
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))

    def _drop(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(Exception):
                self._fh.close()
            self._fh = None

    async def chunks_into(
        self, buffers: Buffers, fn: Callable[[memoryview], T]
    ) -> AsyncIterator[tuple[memoryview, T]]:
        try:
            done = False
            while not done:
                buf = buffers.take()  # not given back on a failure: a thread may still fill it
                n, done = await self._next(buf)
                if not n:
                    buffers.give(buf)
                    return
                view = memoryview(buf)[:n]
                yield view, await asyncio.to_thread(fn, view)
        finally:
            await asyncio.to_thread(self._drop)

    async def chunks_with(self, fn: Callable[[bytes], T]) -> AsyncIterator[tuple[bytes, T]]:
        buffers = Buffers(self.chunk, 1)
        async for view, _ in self.chunks_into(buffers, _nothing):
            data = bytes(view)  # the caller may keep it: a copy, and the buffer is reused
            buffers.give(view.obj)
            yield data, await asyncio.to_thread(fn, data)


def store_error(exc: BackupStoreError, sealed: SealedFile) -> Exception:
    """The backup store's error, as the upload's: retry, or keep the recording for an operator."""
    if isinstance(exc, ObjectMissing):
        return LocalIntegrityError(
            f"backup file {sealed.name} is missing from the backup store; the recording is "
            "retained for an operator"
        )
    if exc.transient:
        return TransientUploadError(f"the backup store did not answer: {exc}")
    return PermanentUploadError(
        f"the backup in the store cannot be used: {exc}; the recording was not sent"
    )


def _nothing(_data: object) -> None:
    return None
