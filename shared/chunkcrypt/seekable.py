"""A seekable file that lands on disk encrypted: for muxers (libavformat through PyAV).

Muxers write forward but go back to patch what they learn at the end: Matroska's segment size,
seek head and duration, MP4's ``mdat`` size, all in the first kilobytes. A chunk of this format
is sealed once (its nonce is its index under the file's key: sealing it again with other bytes
would reuse a nonce), so this writer keeps the file's first ``head`` bytes and its newest
``window`` bytes in memory, in plaintext, and seals a chunk only when it falls out of the window
(``os.pwrite`` at its fixed offset). The head is sealed at ``close``, with the header. So no
plaintext byte ever reaches the disk, and the patches muxers make cost nothing.

A write into a chunk already sealed (no muxer we use does that) is kept as a patch in memory;
``close`` then seals the file as written and rewrites it once more under a fresh salt (hence a
fresh key: no nonce is reused) with the patches applied.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from .files import decrypt_stream
from .format import DEFAULT_CHUNK_SIZE, HEADER_SIZE, TAG_SIZE, BytesLike, FileCipher, wipe
from .stream import Encryptor

HEAD = 1 << 20
WINDOW = 1 << 20


class SealedOutput(io.RawIOBase):
    def __init__(
        self,
        path: Path,
        data_key: BytesLike,
        *,
        recording_id: str,
        name: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        head: int = HEAD,
        window: int = WINDOW,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self._key = bytearray(data_key)  # kept for a rewrite with patches; wiped at close
        self._rid, self._name = recording_id, name
        self._cipher = FileCipher(self._key, recording_id, name, chunk_size=chunk_size)
        self._c = chunk_size
        self._head_len = -(-max(head, 1) // chunk_size) * chunk_size
        self._window = max(window, chunk_size)
        self._head = bytearray()  # plaintext of [0, head_len)
        self._tail = bytearray()  # plaintext of [tail_start, tail_start + len)
        self._tail_start = self._head_len
        self._size = 0
        self._pos = 0
        self._patches: list[tuple[int, bytes]] = []  # writes into chunks already sealed
        self.resealed = False  # the file had to be rewritten for such patches
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def __repr__(self) -> str:
        return f"<SealedOutput {self._name} size={self._size}>"

    def __getstate__(self) -> None:
        raise TypeError("a SealedOutput holding keys cannot be pickled")

    # -- io.RawIOBase -----------------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the file")
        self._pos = base + offset
        return self._pos

    def write(self, data: BytesLike) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed SealedOutput")
        view = memoryview(data).cast("B")
        n = len(view)
        pos, end = self._pos, self._pos + n
        if pos < self._head_len:
            cut = min(end, self._head_len)
            _put(self._head, pos, view[: cut - pos])
        if end > self._head_len and pos < self._tail_start:
            lo, hi = max(pos, self._head_len), min(end, self._tail_start)
            self._patches.append((lo, bytes(view[lo - pos : hi - pos])))
        if end > self._tail_start:
            lo = max(pos, self._tail_start)
            _put(self._tail, lo - self._tail_start, view[lo - pos :])
        self._pos = end
        self._size = max(self._size, end)
        self._seal_out_of_window()
        return n

    def _seal_out_of_window(self) -> None:
        c = self._c
        while len(self._tail) > c + self._window:
            index = self._tail_start // c
            self._pwrite_chunk(index, self._tail[:c], last=False)
            del self._tail[:c]
            self._tail_start += c

    def _pwrite_chunk(self, index: int, plain: BytesLike, *, last: bool) -> None:
        blob = self._cipher.seal(index, plain, last)
        os.pwrite(self._fd, blob, HEADER_SIZE + index * (self._c + TAG_SIZE))

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._finish()
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._cipher.wipe()
            wipe(self._head)
            wipe(self._tail)
            super().close()
        try:
            if self._patches:
                self._rewrite_with_patches()
        finally:
            wipe(self._key)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # A failed mux leaves no sealed-looking file: without its last chunk it reads as cut.
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Stop without sealing (the file is left incomplete: callers delete it)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._cipher.wipe()
        wipe(self._head)
        wipe(self._tail)
        wipe(self._key)
        self._patches.clear()
        super().close()

    def _finish(self) -> None:
        c, size = self._c, self._size
        chunks = max(1, -(-size // c))
        last = chunks - 1
        if size > self._head_len:
            tail_first = self._tail_start // c
            _pad(self._tail, size - self._tail_start)
            for i in range(tail_first, chunks):
                piece = self._tail[(i - tail_first) * c : (i - tail_first + 1) * c]
                self._pwrite_chunk(i, piece, last=i == last)
            _pad(self._head, self._head_len)
        else:
            _pad(self._head, size)
        for i in range(min(chunks, self._head_len // c)):
            self._pwrite_chunk(i, self._head[i * c : (i + 1) * c], last=i == last)
        os.pwrite(self._fd, self._cipher.header, 0)
        os.fsync(self._fd)

    def _rewrite_with_patches(self) -> None:
        """Apply writes that hit sealed chunks: decrypt what was sealed, patch, encrypt anew."""
        tmp = self.path.with_name(f".{self.path.name}.reseal")
        enc = Encryptor(self._key, recording_id=self._rid, name=self._name, chunk_size=self._c)
        offset = 0
        try:
            with self.path.open("rb") as src, tmp.open("xb") as dst:
                chunks = decrypt_stream(src, self._key, recording_id=self._rid, name=self._name)
                for plain in chunks:
                    piece = bytearray(plain)
                    for at, patch in self._patches:
                        lo, hi = max(at, offset), min(at + len(patch), offset + len(piece))
                        if lo < hi:
                            piece[lo - offset : hi - offset] = patch[lo - at : hi - at]
                    offset += len(piece)
                    enc.feed(piece, dst.write)
                    wipe(piece)
                enc.finish(dst.write)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.path)
            self.resealed = True
        finally:
            self._patches.clear()
            enc.wipe()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _put(buf: bytearray, at: int, data: memoryview) -> None:
    """Write ``data`` at ``at`` in ``buf``, growing it with zeros (a sparse file's holes)."""
    end = at + len(data)
    if end > len(buf):
        buf.extend(bytes(end - len(buf)))
    buf[at:end] = data


def _pad(buf: bytearray, size: int) -> None:
    if len(buf) < size:
        buf.extend(bytes(size - len(buf)))
