"""A small TCP proxy between the uploader and a storage server, run in its own thread.

It can: refuse and cut every connection (``down``), slow the uploads down (``rate``), count the
bytes sent towards the server, and damage one byte of one request body (``corrupt_once``):
for HTTP it parses each request (headers, Content-Length) and flips a byte in the middle of the
first body at least ``min_body`` long; in FTP mode it rewrites the ``227``/``229`` passive-mode
replies of the (plain) control connection so data connections pass through it as well, and
flips one byte of the first upload data stream that gets far enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

EPSV_RE = re.compile(rb"^229 (.*)\(\|\|\|(\d+)\|\)", re.M)
PASV_RE = re.compile(rb"^227 (.*)\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", re.M)


class Proxy:
    def __init__(self, target_port: int, *, mode: str = "http", target_host: str = "127.0.0.1"):
        """``mode``: "http" (parse requests), "ftp" (plain FTP control connection) or "raw"."""
        self.target_host = target_host
        self.target_port = target_port
        self.mode = mode
        self.down = False
        self.rate: float | None = None  # bytes per second towards the server, None: unlimited
        self.sent = 0  # bytes forwarded towards the server
        self.corrupted = 0  # bodies damaged so far
        self._armed = False
        self._min_body = 0
        self._flip_at = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # -- control (from the test's thread) -------------------------------------------------------
    def start(self) -> Proxy:
        self._thread.start()
        server = self._run(asyncio.start_server(self._client, "127.0.0.1", 0))
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
            for w in list(self._writers):
                _abort(w)

        with contextlib.suppress(Exception):
            self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def set_down(self, down: bool) -> None:
        """Down: every open connection is cut and new ones are reset at once."""
        self.down = down
        if down:

            async def cut() -> None:
                for w in list(self._writers):
                    _abort(w)

            self._run(cut())

    def corrupt_once(self, min_body: int = 256 * 1024, flip_at: int = 100_000) -> None:
        self._min_body, self._flip_at, self._armed = min_body, flip_at, True

    def _run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # -- connections ----------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._relay(reader, writer, self.target_port, control=self.mode == "ftp")

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        port: int,
        *,
        control: bool = False,
        data: bool = False,
    ) -> None:
        if self.down:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, port)
        except OSError:
            _abort(writer)
            return
        self._writers.update((writer, up_writer))
        if data:
            to_server = self._pump_data
        elif self.mode == "http":
            to_server = self._pump_http
        else:
            to_server = self._pump_plain
        from_server = self._pump_control if control else self._pump_plain_back
        try:
            await asyncio.gather(to_server(reader, up_writer), from_server(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                _abort(w)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, to_server: bool) -> None:
        if self.down:
            raise ConnectionResetError
        writer.write(data)
        await writer.drain()
        if to_server:
            self.sent += len(data)
            if self.rate:
                await asyncio.sleep(len(data) / self.rate)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transform: Callable[[bytes], bytes],
        to_server: bool,
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(64 * 1024):
                await self._write(writer, transform(data), to_server)
            if writer.can_write_eof():
                writer.write_eof()

    async def _pump_plain(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self._pump(r, w, lambda d: d, True)

    async def _pump_plain_back(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self._pump(r, w, lambda d: d, False)

    async def _pump_data(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """An FTP data connection towards the server: damage byte ``flip_at`` once."""
        seen = 0

        def flip(data: bytes) -> bytes:
            nonlocal seen
            start, seen = seen, seen + len(data)
            if self._armed and start <= self._flip_at < seen:
                self._armed = False
                self.corrupted += 1
                buf = bytearray(data)
                buf[self._flip_at - start] ^= 0x01
                return bytes(buf)
            return data

        await self._pump(r, w, flip, True)

    async def _pump_http(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Requests towards the server, parsed just enough to find each body."""
        parser = _HttpBodies(self)
        await self._pump(r, w, parser.feed, True)

    async def _pump_control(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """FTP control replies: passive-mode ports are replaced by forwarders of ours."""
        with contextlib.suppress(OSError, ConnectionError):
            while line := await r.readline():
                line = await self._rewrite_passive(line)
                await self._write(w, line, False)

    async def _rewrite_passive(self, line: bytes) -> bytes:
        m = EPSV_RE.match(line)
        if m:
            port = await self._data_forwarder(int(m.group(2)))
            return line[: m.start(2)] + str(port).encode() + line[m.end(2) :]
        m = PASV_RE.match(line)
        if m:
            target = int(m.group(6)) * 256 + int(m.group(7))
            port = await self._data_forwarder(target)
            return b"227 Entering Passive Mode (127,0,0,1,%d,%d).\r\n" % (port // 256, port % 256)
        return line

    async def _data_forwarder(self, target: int) -> int:
        """A one-connection listener that relays to the server's data port ``target``."""
        done: dict[str, asyncio.AbstractServer] = {}

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            done["server"].close()
            await self._relay(reader, writer, target, data=True)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        done["server"] = server
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])


class _HttpBodies:
    """Splits a client's byte stream into request heads and bodies (Content-Length only)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.head = b""
        self.remaining = 0  # body bytes still to come for the current request
        self.flip_at = -1  # index in the current body to damage, -1: none
        self.body_pos = 0
        self.raw = False  # chunked or unparseable: pass the rest through untouched

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        while view and not self.raw:
            if self.remaining:
                take = min(len(view), self.remaining)
                piece = bytearray(view[:take])
                if 0 <= self.flip_at - self.body_pos < take:
                    piece[self.flip_at - self.body_pos] ^= 0x01
                    self.flip_at = -1
                    self.proxy.corrupted += 1
                out += piece
                self.body_pos += take
                self.remaining -= take
                view = view[take:]
                continue
            self.head += bytes(view)
            view = memoryview(b"")
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                continue
            head, rest = self.head[: end + 4], self.head[end + 4 :]
            self.head = b""
            out += head
            self._start_body(head)
            view = memoryview(rest)
        if self.raw:
            out += self.head + bytes(view)
            self.head = b""
        return bytes(out)

    def _start_body(self, head: bytes) -> None:
        lowered = head.lower()
        if b"transfer-encoding: chunked" in lowered:
            self.raw = True
            return
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", lowered)
        self.remaining = int(m.group(1)) if m else 0
        self.body_pos = 0
        self.flip_at = -1
        p = self.proxy
        if p._armed and self.remaining >= p._min_body:
            p._armed = False
            self.flip_at = self.remaining // 2


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed or unplugged server would look."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
