"""A request body that aiohttp writes straight from our part buffer, without copying it.

Handed a ``bytes`` body, aiohttp (on Python < 3.12.9) joins the request headers and the whole body
into one new object before writing it (a copy of every part), and asyncio's socket transport then
slices off what the first ``send`` did not take and appends it to its own buffer (two more copies
of that rest), all before the kernel's own. ``PartBody`` sends the headers on their own, then the
part in slices the socket usually takes whole, so the bytes go from our buffer to the kernel.

It is also the read-only, seekable file-like object botocore expects of a streaming body (length,
``seek(0)`` to resend on a retry); aiohttp uses any ``Payload`` as it is.
"""

from __future__ import annotations

import io

from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.payload import Payload

# Half the send buffer our S3 connections ask for (s3.SEND_BUFFER, doubled by Linux): most
# slices go to the kernel in one send, and the few partly sent leave little for asyncio to copy.
SLICE = 4 * 1024 * 1024


class PartBody(Payload):
    _autoclose = True  # holds no resource of its own: the buffer belongs to the caller

    def __init__(self, data: memoryview) -> None:
        super().__init__(data, content_type=None)
        self._view = data
        self._size = self._length = len(data)
        self._pos = 0
        self._retired = False

    def retire(self) -> None:
        """The caller takes the buffer back: no slice of it may be written after this."""
        self._retired = True

    # aiohttp's side ---------------------------------------------------------------------------

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = self._view if content_length is None else self._view[:content_length]
        writer.send_headers()  # alone, so the body is never joined to them
        for start in range(0, len(view), SLICE):
            if self._retired:  # a request given up on while still writing (aiohttp cancels it)
                raise ClientConnectionResetError("the part's buffer was taken back")
            await writer.write(view[start : start + SLICE])

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._view).decode(encoding, errors)

    # botocore's side (a read-only binary file) ------------------------------------------------

    def __len__(self) -> int:
        return self._length

    def __bytes__(self) -> bytes:
        return bytes(self._view)

    def read(self, size: int = -1) -> bytes:
        """Only for botocore code paths that read a body themselves (none of ours: a copy)."""
        end = self._length if size is None or size < 0 else min(self._length, self._pos + size)
        data = bytes(self._view[self._pos : end])
        self._pos = max(self._pos, end)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def __repr__(self) -> str:  # botocore logs the body it rewinds: never its bytes
        return f"<PartBody {self._length} bytes>"
