"""File-level helpers: a writer over a binary file, a pull reader (also from an offset), and
file-to-file encrypt / decrypt / verify."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, cast

from .format import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    BytesLike,
    FileCipher,
    TamperedError,
    TruncatedError,
    chunk_start,
    locate,
    plaintext_size,
)
from .stream import Encryptor


class ChunkWriter:
    """Writes an encrypted file to ``fileobj`` (which it does not close).

    ``fileobj.write`` gets views of one reused buffer: it must consume them before it returns
    (files, sockets and ``BytesIO`` do; a list's ``append`` does not).

    As a context manager it writes the last chunk on a clean exit only: after an exception the
    file is left without one, so every reader rejects it as truncated, never as a shorter file.
    """

    def __init__(self, fileobj: BinaryIO, encryptor: Encryptor) -> None:
        self._file = fileobj
        self._enc = encryptor
        self.closed = False

    def __repr__(self) -> str:
        return f"<ChunkWriter {self._enc!r}>"

    @property
    def plaintext_size(self) -> int:
        return self._enc.plaintext_size

    def write(self, data: BytesLike) -> int:
        self._enc.feed(data, self._file.write)
        return memoryview(data).nbytes

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._enc.finish(self._file.write)

    def abort(self) -> None:
        """Stop without the last chunk (the file reads as truncated) and wipe the keys."""
        self.closed = True
        self._enc.wipe()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_writer(
    fileobj: BinaryIO,
    data_key: BytesLike,
    *,
    recording_id: str,
    name: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ChunkWriter:
    enc = Encryptor(data_key, recording_id=recording_id, name=name, chunk_size=chunk_size)
    return ChunkWriter(fileobj, enc)


class Readable(Protocol):
    """A stream read front to back (a socket, an object's body): ``readinto`` only."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Source(Protocol):
    """What the readers need of a file: ``readinto`` (and ``seek``/``tell`` for an offset)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


def _fill(src: Readable, view: memoryview) -> int:
    """Fill ``view``, short only at EOF (a raw stream's ``readinto`` may return less before it)."""
    got = src.readinto(view) or 0
    while got < len(view):
        more = src.readinto(view[got:])
        if not more:
            break
        got += more
    return got


def encrypt_stream(
    src: Source,
    dst: BinaryIO,
    data_key: BytesLike,
    *,
    recording_id: str,
    name: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt all of ``src`` into ``dst``; returns the plaintext size.

    Reads one chunk ahead, to know which is the last, into two reused buffers; seals into a third.
    """
    cipher = FileCipher(data_key, recording_id, name, chunk_size=chunk_size)
    bufs = [memoryview(bytearray(chunk_size)) for _ in range(2)]
    out = memoryview(bytearray(chunk_size + TAG_SIZE))
    try:
        dst.write(cipher.header)
        index = total = 0
        got = _fill(src, bufs[0])
        while True:
            nxt = _fill(src, bufs[1]) if got == chunk_size else 0
            dst.write(cipher.seal_into(index, bufs[0][:got], not nxt, out))
            total += got
            if not nxt:
                return total
            bufs.reverse()
            got, index = nxt, index + 1
    finally:
        cipher.wipe()
        for buf in bufs:
            buf[:] = bytes(len(buf))


def _chunks(
    src: Readable, cipher: FileCipher, index: int, skip: int, plain_buf: memoryview | None
) -> Iterator[BytesLike]:
    """The verified plaintext of chunk ``index`` on (``src`` is at its first byte), to the end
    of the file, ``skip`` bytes of the first left out: new ``bytes``, or views of ``plain_buf``.
    Reads one chunk ahead, to know which is the last. Wipes ``cipher`` when done."""
    step = cipher.chunk_size + TAG_SIZE
    bufs = [memoryview(bytearray(step)) for _ in range(2)]
    try:
        got = _fill(src, bufs[0])
        while True:
            if not got:
                raise TruncatedError("the file ends before its last chunk", chunk=index)
            nxt = _fill(src, bufs[1]) if got == step else 0
            blob = bufs[0][:got]
            plain: BytesLike
            if plain_buf is not None:
                plain = cipher.open_into(index, blob, not nxt, plain_buf)
            else:
                plain = cipher.open(index, blob, not nxt)
            if skip:
                plain, skip = plain[skip:], 0
            if len(plain):
                yield plain
            if not nxt:
                return
            bufs.reverse()
            got, index = nxt, index + 1
    finally:
        cipher.wipe()
        if plain_buf is not None:
            plain_buf[:] = bytes(len(plain_buf))


def _open_chunks(
    src: Source,
    data_key: BytesLike,
    recording_id: str,
    name: str,
    offset: int,
    into: bool,
) -> Iterator[BytesLike]:
    """Verified plaintext per chunk: new ``bytes``, or (``into``) views of one reused buffer."""
    base = src.tell() if offset else 0
    header = memoryview(bytearray(HEADER_SIZE))
    got = _fill(src, header)
    if got < HEADER_SIZE:
        raise TruncatedError(f"the file ends inside the header ({got} bytes)")
    cipher = FileCipher(data_key, recording_id, name, header=header)
    index = skip = 0
    if offset:
        try:
            total = plaintext_size(src.seek(0, os.SEEK_END) - base, cipher.chunk_size)
            if offset > total:
                raise ValueError(f"offset {offset} is past the end ({total} bytes)")
        except BaseException:
            cipher.wipe()
            raise
        index, skip = locate(offset, cipher.chunk_size)
        src.seek(base + chunk_start(offset, cipher.chunk_size))
    plain_buf = memoryview(bytearray(cipher.chunk_size)) if into else None
    yield from _chunks(src, cipher, index, skip, plain_buf)


def decrypt_stream(
    src: Source, data_key: BytesLike, *, recording_id: str, name: str, offset: int = 0
) -> Iterator[bytes]:
    """Verified plaintext of ``src``, chunk by chunk (``bytes``), from plaintext ``offset`` on.

    The encrypted file starts at ``src``'s current position. ``offset`` > 0 needs a seekable
    ``src``: the header is read, then the reader seeks to the chunk holding ``offset`` (the file's
    size tells which chunk is the last, so a truncation is still caught at the end). A failure
    raises ``TamperedError`` before anything of the failing chunk is yielded. Lazy: nothing is
    read until the first ``next``.
    """
    # into=False: every item is a new bytes object from AESGCM.decrypt, the caller's to keep.
    return cast(Iterator[bytes], _open_chunks(src, data_key, recording_id, name, offset, False))


def decrypt_to(
    src: Source,
    emit: Callable[[BytesLike], object],
    data_key: BytesLike,
    *,
    recording_id: str,
    name: str,
    offset: int = 0,
) -> int:
    """Like ``decrypt_stream``, but ``emit(view)`` per chunk with a view of one reused buffer
    (valid only during the call: e.g. a file's ``write``). Returns the plaintext size emitted."""
    total = 0
    for plain in _open_chunks(src, data_key, recording_id, name, offset, into=True):
        emit(plain)
        total += len(plain)
    return total


def verify_stream(src: Source, data_key: BytesLike, *, recording_id: str, name: str) -> int:
    """Check every chunk, keep no plaintext; returns the plaintext size or raises."""
    return decrypt_to(src, _discard, data_key, recording_id=recording_id, name=name)


def _discard(_: BytesLike) -> None:
    pass


@contextlib.contextmanager
def _replacing(dst: Path) -> Iterator[BinaryIO]:
    """A temporary file next to ``dst``, renamed over it only if the block completes: a failed
    run leaves no partial file behind (for decryption: no unverified-looking half plaintext)."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            yield fh
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def encrypt_file(
    src: Path,
    dst: Path,
    data_key: BytesLike,
    *,
    recording_id: str,
    name: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt ``src`` to ``dst`` (atomically replaced); returns the plaintext size."""
    with open(src, "rb") as fin, _replacing(dst) as fout:
        return encrypt_stream(
            fin, fout, data_key, recording_id=recording_id, name=name, chunk_size=chunk_size
        )


def decrypt_file(src: Path, dst: Path, data_key: BytesLike, *, recording_id: str, name: str) -> int:
    """Decrypt ``src`` to ``dst``, which appears only if every chunk verified; returns its size."""
    with open(src, "rb") as fin, _replacing(dst) as fout:
        return decrypt_to(fin, fout.write, data_key, recording_id=recording_id, name=name)


def verify_file(path: Path, data_key: BytesLike, *, recording_id: str, name: str) -> int:
    with open(path, "rb") as fin:
        return verify_stream(fin, data_key, recording_id=recording_id, name=name)


def decrypt_prefix(
    src: Readable, data_key: BytesLike, *, recording_id: str, name: str
) -> Iterator[bytes]:
    """What a writer killed mid-file left readable: each chunk that authenticates, in order, up to
    the first that does not (a chunk cut short by the crash) or the end.

    For crash recovery only (the proxy's salvage of its own spool): it cannot tell a truncation
    from a crash, so it must never be used where a shortened file would be accepted as whole.
    The header still has to verify (a wrong key or another file fails at once).
    """
    header = memoryview(bytearray(HEADER_SIZE))
    if _fill(src, header) < HEADER_SIZE:
        return
    cipher = FileCipher(data_key, recording_id, name, header=header)
    step = cipher.chunk_size + TAG_SIZE
    blob = memoryview(bytearray(step))
    try:
        index = 0
        while got := _fill(src, blob):
            piece = blob[:got]
            try:
                yield cipher.open(index, piece, False)
            except TamperedError:
                # The file's real last chunk (it was finished after all), or the cut-off one.
                with contextlib.suppress(TamperedError):
                    yield cipher.open(index, piece, True)
                return
            index += 1
    finally:
        cipher.wipe()


def decrypt_from(
    src: Readable,
    data_key: BytesLike,
    *,
    recording_id: str,
    name: str,
    header: BytesLike,
    offset: int,
) -> Iterator[bytes]:
    """Resume a read at plaintext ``offset`` over a stream that cannot seek (a range read of an
    object): ``header`` is the file's first ``HEADER_SIZE`` bytes (read earlier) and ``src``
    starts at ``chunk_start(offset)``. Verified as ``decrypt_stream``, to the end of the file."""
    # A generator: like decrypt_stream, nothing (not even the header check) happens before the
    # first ``next``, so a bad header surfaces where reads are already handled.
    cipher = FileCipher(data_key, recording_id, name, header=header)
    index, skip = locate(offset, cipher.chunk_size)
    yield from cast(Iterator[bytes], _chunks(src, cipher, index, skip, None))


class PlainReader:
    """A read-only binary file over an encrypted one: ``read(n)`` / ``readinto`` return
    verified plaintext (from the chunks of ``decrypt_stream`` or ``decrypt_from``).

    Every byte returned belongs to a chunk that authenticated; a tampered chunk raises
    ``TamperedError`` from the read that reaches it. ``close`` closes ``raw`` if given.
    """

    def __init__(self, chunks: Iterator[bytes], raw: object = None) -> None:
        self._chunks = chunks
        self._raw = raw
        self._buf = b""
        self._pos = 0

    def readinto(self, view: memoryview, /) -> int:
        n = 0
        while n < len(view):
            if self._pos >= len(self._buf):
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._buf, self._pos = nxt, 0
            take = min(len(view) - n, len(self._buf) - self._pos)
            view[n : n + take] = self._buf[self._pos : self._pos + take]
            self._pos += take
            n += take
        return n

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close is not None:
            close()

    def read(self, n: int = -1) -> bytes:
        end = self._pos + n
        if 0 <= n and end <= len(self._buf):  # the common case: a record inside one chunk
            data = self._buf[self._pos : end]
            self._pos = end
            return data
        parts: list[bytes] = []
        want = n
        while want != 0:
            if self._pos >= len(self._buf):
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._buf, self._pos = nxt, 0
            take = len(self._buf) - self._pos if want < 0 else min(want, len(self._buf) - self._pos)
            parts.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            if want > 0:
                want -= take
        return b"".join(parts)
