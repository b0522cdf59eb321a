"""Push-style encryption and decryption: feed bytes of any size, get whole chunks back.

Both hold back up to one chunk: a chunk is sealed (or opened) as a middle chunk only once at least
one more byte has arrived, because the last chunk is marked as such and may be a full one. They
suit sources that push, e.g. an S3 response body read piece by piece in a coroutine.
"""

from __future__ import annotations

from collections.abc import Callable

from .format import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    TAG_SIZE,
    BytesLike,
    FileCipher,
    TruncatedError,
    locate,
    wipe,
)


def _rechunk(buf: bytearray, data: BytesLike, step: int, emit: Callable[[BytesLike], None]) -> None:
    """Pass each ``step``-byte piece of ``buf`` + ``data`` to ``emit``, but keep the last (<= step).

    Pieces wholly inside ``data`` go out as memoryview slices, not copies: at 64 KiB chunks a
    copy per chunk is a measurable share of AES-GCM's own cost.
    """
    mv = memoryview(data).cast("B")
    if buf:
        if len(buf) + len(mv) <= step:
            buf += mv
            return
        take = step - len(buf)
        buf += mv[:take]
        mv = mv[take:]
        emit(buf)
        buf.clear()
    while len(mv) > step:
        emit(mv[:step])
        mv = mv[step:]
    buf += mv


Sealer = Callable[[int, BytesLike, bool], BytesLike]
Emit = Callable[[BytesLike], object]


class Encryptor:
    """Plaintext in (any sizes, any number of calls), ciphertext out: the header, then chunks.

    ``update`` / ``finalize`` return new ``bytes`` objects. ``feed`` / ``finish`` pass views of
    one reused buffer to a callback instead (the writer's path: no allocation per chunk, which
    matters because glibc returns freed runs of chunks to the kernel and faults them back in).
    ``finalize`` / ``finish`` seal the last chunk and wipe the keys. Not thread-safe.
    """

    def __init__(
        self,
        data_key: BytesLike,
        *,
        recording_id: str,
        name: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        _salt: bytes | None = None,  # known-answer tests ONLY: a reused salt reuses nonces
    ) -> None:
        self._cipher = FileCipher(data_key, recording_id, name, chunk_size=chunk_size, salt=_salt)
        self.chunk_size = chunk_size
        self.recording_id = recording_id
        self.name = name
        self._buf = bytearray()
        self._outbuf: memoryview | None = None
        self._index = 0
        self._header_sent = False
        self._done = False
        self.plaintext_size = 0

    def __repr__(self) -> str:
        return (
            f"<Encryptor {self.recording_id}/{self.name} chunk_size={self.chunk_size} "
            f"chunks={self._index} done={self._done}>"
        )

    def __getstate__(self) -> None:
        raise TypeError("an Encryptor holding keys cannot be pickled")

    @property
    def header(self) -> bytes:
        return self._cipher.header

    def _seal_into(self, index: int, piece: BytesLike, last: bool) -> BytesLike:
        if self._outbuf is None:
            self._outbuf = memoryview(bytearray(self.chunk_size + TAG_SIZE))
        return self._cipher.seal_into(index, piece, last, self._outbuf)

    def _push(self, data: BytesLike, seal: Sealer, emit: Emit) -> None:
        if self._done:
            raise ValueError("this Encryptor is finalized or wiped")
        if not self._header_sent:
            emit(self._cipher.header)
            self._header_sent = True

        def middle(piece: BytesLike) -> None:
            emit(seal(self._index, piece, False))
            self._index += 1

        try:
            _rechunk(self._buf, data, self.chunk_size, middle)
        except BaseException:
            # A chunk may be half-emitted (the sink failed): going on would write a file that
            # fails to verify, so stop here; the file, lacking its last chunk, reads as truncated.
            self.wipe()
            raise
        self.plaintext_size += memoryview(data).nbytes

    def _last(self, seal: Sealer, emit: Emit) -> None:
        self._push(b"", seal, emit)
        try:
            emit(seal(self._index, self._buf, True))
            self._index += 1
        finally:
            self.wipe()

    def update(self, data: BytesLike) -> list[bytes]:
        """Ciphertext ready so far (header first, on the first call); may be empty."""
        out: list[bytes] = []
        self._push(data, self._cipher.seal, out.append)  # type: ignore[arg-type]
        return out

    def finalize(self) -> list[bytes]:
        """The rest: the last chunk (empty for an empty file)."""
        out: list[bytes] = []
        self._last(self._cipher.seal, out.append)  # type: ignore[arg-type]
        return out

    def feed(self, data: BytesLike, emit: Emit) -> None:
        """``emit(view)`` for each piece of ciphertext; a view is valid only during its call."""
        self._push(data, self._seal_into, emit)

    def finish(self, emit: Emit) -> None:
        self._last(self._seal_into, emit)

    def wipe(self) -> None:
        """Drop keys and buffered plaintext; without ``finalize`` the file stays truncated."""
        self._done = True
        self._cipher.wipe()
        wipe(self._buf)
        if self._outbuf is not None:
            self._outbuf[:] = bytes(len(self._outbuf))


Opener = Callable[[int, BytesLike, bool], BytesLike]


class Decryptor:
    """Ciphertext in, verified plaintext out, one chunk at a time.

    Feed the 76-byte header, then the chunks: all of them, or, with ``offset``, those from
    ``chunk_start(offset, chunk_size)`` on (range-read resume; the plaintext then starts exactly at
    ``offset``). ``finalize`` opens the last chunk: without it, truncation goes unnoticed.
    Any failure raises a ``TamperedError`` and gives out nothing of the failing chunk.
    ``update`` / ``finalize`` return ``bytes``; ``feed`` / ``finish`` pass views of one reused
    buffer to a callback (valid only during the call), as ``Encryptor`` does.
    """

    def __init__(
        self, data_key: BytesLike, *, recording_id: str, name: str, offset: int = 0
    ) -> None:
        if len(data_key) != KEY_SIZE:
            raise ValueError(f"the data key must be {KEY_SIZE} bytes")
        if offset < 0:
            raise ValueError("offset must not be negative")
        # Kept only until the header arrives: its salt is needed to derive the file's keys.
        self._data_key: bytearray | None = bytearray(data_key)
        self.recording_id = recording_id
        self.name = name
        self.offset = offset
        self._cipher: FileCipher | None = None
        self._buf = bytearray()
        self._outbuf: memoryview | None = None
        self._index = 0
        self._skip = 0
        self._done = False
        self.plaintext_size = 0

    def __repr__(self) -> str:
        return f"<Decryptor {self.recording_id}/{self.name} chunk={self._index} done={self._done}>"

    def __getstate__(self) -> None:
        raise TypeError("a Decryptor holding keys cannot be pickled")

    @property
    def chunk_size(self) -> int | None:
        """Known once the header is in."""
        return None if self._cipher is None else self._cipher.chunk_size

    def _open_bytes(self, index: int, piece: BytesLike, last: bool) -> BytesLike:
        assert self._cipher is not None
        return self._cipher.open(index, piece, last)

    def _open_into(self, index: int, piece: BytesLike, last: bool) -> BytesLike:
        assert self._cipher is not None
        if self._outbuf is None:
            self._outbuf = memoryview(bytearray(self._cipher.chunk_size))
        return self._cipher.open_into(index, piece, last, self._outbuf)

    def _one(self, piece: BytesLike, last: bool, open_: Opener, emit: Emit) -> None:
        plain = open_(self._index, piece, last)
        self._index += 1
        if self._skip:
            plain = plain[self._skip :]
            self._skip = 0
        if len(plain):
            self.plaintext_size += len(plain)
            emit(plain)

    def _push(self, data: BytesLike, open_: Opener, emit: Emit) -> None:
        if self._done:
            raise ValueError("this Decryptor is finalized or wiped")
        try:
            if self._cipher is None:
                self._buf += data
                if len(self._buf) < HEADER_SIZE:
                    return
                data = bytes(self._buf[HEADER_SIZE:])
                self._start(self._buf[:HEADER_SIZE])
                self._buf.clear()
            assert self._cipher is not None
            step = self._cipher.chunk_size + TAG_SIZE
            _rechunk(self._buf, data, step, lambda piece: self._one(piece, False, open_, emit))
        except BaseException:
            self.wipe()
            raise

    def _start(self, header: BytesLike) -> None:
        assert self._data_key is not None
        try:
            self._cipher = FileCipher(self._data_key, self.recording_id, self.name, header=header)
        finally:
            wipe(self._data_key)
            self._data_key = None
        self._index, self._skip = locate(self.offset, self._cipher.chunk_size)

    def _last(self, open_: Opener, emit: Emit) -> None:
        if self._done:
            raise ValueError("this Decryptor is finalized or wiped")
        try:
            if self._cipher is None:
                raise TruncatedError(f"the file ends inside the header ({len(self._buf)} bytes)")
            if not self._buf:
                raise TruncatedError("the file ends before its last chunk", chunk=self._index)
            self._one(self._buf, True, open_, emit)
        finally:
            self.wipe()

    def update(self, data: BytesLike) -> list[bytes]:
        """Plaintext of every chunk verified so far; may be empty."""
        out: list[bytes] = []
        self._push(data, self._open_bytes, out.append)  # type: ignore[arg-type]
        return out

    def finalize(self) -> list[bytes]:
        """Open the last chunk, or ``TruncatedError`` if the input stopped before it."""
        out: list[bytes] = []
        self._last(self._open_bytes, out.append)  # type: ignore[arg-type]
        return out

    def feed(self, data: BytesLike, emit: Emit) -> None:
        self._push(data, self._open_into, emit)

    def finish(self, emit: Emit) -> None:
        self._last(self._open_into, emit)

    def wipe(self) -> None:
        """Drop the keys and any plaintext left in the reused buffer."""
        self._done = True
        if self._data_key is not None:
            wipe(self._data_key)
            self._data_key = None
        if self._cipher is not None:
            self._cipher.wipe()
        if self._outbuf is not None:
            self._outbuf[:] = bytes(len(self._outbuf))
        self._buf.clear()
