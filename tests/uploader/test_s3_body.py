"""The S3 send path that avoids copies: ``PartBody``, the reused part buffers, one botocore session
and one SSL context for every client, and a part resent whole when botocore retries it."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from isal.isal_zlib import crc32

from services.uploader.errors import LocalIntegrityError
from services.uploader.partbody import SLICE, PartBody
from services.uploader.resume import detached
from services.uploader.s3 import SEND_BUFFER, S3Backend, upload_socket
from services.uploader.source import STEP, Buffers, LocalReader
from shared.events.transcodes import SealedFile

MIB = 1 << 20


def sealed_file(path: Path, data: bytes) -> SealedFile:
    path.write_bytes(data)
    return SealedFile(
        name=path.name,
        role="media",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        crc32=zlib.crc32(data),
    )


class FakeWriter:
    """Records what a payload hands the stream writer, and whether headers went first."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def send_headers(self) -> None:
        self.events.append("headers")

    async def write(self, chunk: Any) -> None:
        assert isinstance(chunk, memoryview)  # a view of our buffer, never a copy
        self.events.append(bytes(chunk))


async def test_part_body_sends_headers_alone_then_slices_of_the_buffer() -> None:
    data = bytes(range(256)) * (SLICE // 128 + 3)  # two whole slices and a bit
    body = PartBody(memoryview(bytearray(data)))
    writer = FakeWriter()
    await body.write_with_length(writer, None)  # type: ignore[arg-type]
    assert writer.events[0] == "headers"
    assert [len(c) for c in writer.events[1:]] == [SLICE, SLICE, len(data) - 2 * SLICE]
    assert b"".join(writer.events[1:]) == data
    writer = FakeWriter()
    await body.write_with_length(writer, 10)  # type: ignore[arg-type]
    assert writer.events[1:] == [data[:10]]


async def test_a_retired_part_body_writes_nothing_more() -> None:
    body = PartBody(memoryview(bytearray(3 * SLICE)))
    body.retire()
    with pytest.raises(ConnectionError):
        await body.write_with_length(FakeWriter(), None)  # type: ignore[arg-type]


def test_part_body_is_a_seekable_file_for_botocore() -> None:
    body = PartBody(memoryview(bytearray(b"hello world")))
    assert len(body) == 11 and bytes(body) == b"hello world"
    assert body.read(5) == b"hello" and body.tell() == 5
    assert body.read() == b" world" and body.read() == b""
    assert body.seek(0, io.SEEK_END) == 11
    assert body.seek(-5, io.SEEK_CUR) == 6 and body.read(2) == b"wo"
    assert body.seek(0) == 0 and body.read() == b"hello world"
    assert "hello" not in repr(body)  # botocore logs the body it rewinds


def test_buffers_are_reused_and_bounded() -> None:
    pool = Buffers(16, most=2)
    a, _ = pool.take(), pool.take()
    with pytest.raises(RuntimeError):
        pool.take()
    pool.give(memoryview(a)[:3].obj)
    assert pool.take() is a


@pytest.mark.parametrize(
    ("chunk", "size"),
    [
        (32 * 1024, 96 * 1024),  # three chunks exactly: no extra buffer to find the end
        (2 * STEP + 64, 5 * STEP + 3),  # chunks read in several steps, a short last one
    ],
)
async def test_chunks_into_reads_each_part_into_a_reused_buffer(
    tmp_path: Path, chunk: int, size: int
) -> None:
    data = (hashlib.sha256(b"x").digest() * (size // 32 + 1))[:size]
    sealed = sealed_file(tmp_path / "a.webm", data)
    pool = Buffers(chunk, most=1)  # one buffer: each chunk is given back before the next
    reader = LocalReader(tmp_path / "a.webm", sealed, chunk)
    got = []
    async for piece, crc in reader.chunks_into(pool, crc32):
        assert crc == zlib.crc32(piece)
        got.append(bytes(piece))
        pool.give(piece.obj)
    assert b"".join(got) == data
    assert [len(g) for g in got[:-1]] == [chunk] * (len(got) - 1)
    reader.verify()


async def test_chunks_into_catches_a_file_grown_past_its_sealed_size(tmp_path: Path) -> None:
    data = b"a" * 64
    sealed = sealed_file(tmp_path / "a.webm", data)
    (tmp_path / "a.webm").write_bytes(data + b"b")
    pool = Buffers(32, most=4)
    reader = LocalReader(tmp_path / "a.webm", sealed, 32)
    async for chunk, _ in reader.chunks_into(pool, crc32):
        pool.give(chunk.obj)
    with pytest.raises(LocalIntegrityError):
        reader.verify()


def make_backend(url: str, part: int = 5 * MIB) -> S3Backend:
    return S3Backend(
        {"bucket": "bkt", "endpoint_url": url, "path_style": True},
        {"access_key_id": "a", "secret_access_key": "b"},
        part_size=part,
        part_concurrency=2,
    )


async def test_clients_share_one_session_and_one_ssl_context() -> None:
    one, two = make_backend("https://s3.example.invalid"), make_backend("http://127.0.0.1:9")
    try:
        c1, c2 = await one._c(), await two._c()
        assert c1._endpoint.http_session.__class__.__name__ == "SharedTLSSession"
        ctx1 = await c1._endpoint.http_session._create_connector(None)
        ctx2 = await c2._endpoint.http_session._create_connector(None)
        try:
            assert ctx1._ssl is ctx2._ssl  # built once, not per client
        finally:
            await ctx1.close()
            await ctx2.close()
    finally:
        await one.close()
        await two.close()


def test_upload_sockets_ask_for_a_large_send_buffer() -> None:
    info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 9))
    with upload_socket(info) as sock:
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    with socket.socket() as plain:
        # Linux doubles what is asked and caps it at net.core.wmem_max: more than the default
        assert got > plain.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert got <= 2 * SEND_BUFFER


class FlakyS3:
    """Just enough S3 for a multipart upload; the first UploadPart is answered 500 (botocore
    retries it), and every part body received is kept."""

    def __init__(self) -> None:
        self.bodies: list[tuple[int, bytes]] = []
        self.failed = False
        self.meta = ""
        self.parts: dict[int, tuple[bytes, str]] = {}  # accepted: body, CRC-32

    async def handle(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        body = await request.read()
        xml = '<?xml version="1.0" encoding="UTF-8"?>'
        if request.method == "GET" and "uploads" in q:
            return web.Response(text=xml + "<ListMultipartUploadsResult/>")
        if request.method == "POST" and "uploads" in q:
            self.meta = request.headers.get("x-amz-meta-sha256", "")
            return web.Response(
                text=xml + "<InitiateMultipartUploadResult><UploadId>u1</UploadId>"
                "</InitiateMultipartUploadResult>"
            )
        if request.method == "PUT" and "partNumber" in q:
            number = int(q["partNumber"])
            self.bodies.append((number, body))
            if not self.failed:
                self.failed = True
                return web.Response(
                    status=500, text=xml + "<Error><Code>InternalError</Code></Error>"
                )
            crc = request.headers["x-amz-checksum-crc32"]
            assert base64.b64decode(crc) == crc32(body).to_bytes(4, "big")
            self.parts[number] = (body, crc)
            return web.Response(headers={"ETag": '"e"', "x-amz-checksum-crc32": crc})
        if request.method == "POST" and "uploadId" in q:
            return web.Response(text=xml + "<CompleteMultipartUploadResult/>")
        if request.method == "HEAD":
            raw = b"".join(base64.b64decode(self.parts[n][1]) for n in sorted(self.parts))
            comp = base64.b64encode(crc32(raw).to_bytes(4, "big")).decode()
            size = sum(len(b) for b, _ in self.parts.values())
            return web.Response(
                headers={
                    "Content-Length": str(size),
                    "x-amz-meta-sha256": self.meta,
                    "x-amz-checksum-crc32": f"{comp}-{len(self.parts)}",
                    "ETag": '"e"',
                }
            )
        return web.Response(status=400)


@pytest.fixture
async def flaky_s3() -> AsyncIterator[tuple[FlakyS3, str]]:
    s3 = FlakyS3()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{bucket}", s3.handle)
    app.router.add_route("*", "/{bucket}/{key:.*}", s3.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield s3, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_part_botocore_retries_is_resent_whole(
    flaky_s3: tuple[FlakyS3, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_read(self: PartBody, size: int = -1) -> bytes:
        raise AssertionError("the body was read by the client: a second pass over its bytes")

    monkeypatch.setattr(PartBody, "read", no_read)  # no MD5, SHA-256 or checksum by botocore
    s3, url = flaky_s3
    data = hashlib.sha256(b"y").digest() * (11 * MIB // 32)  # 2 whole parts and 1 MiB
    sealed = sealed_file(tmp_path / "b.webm", data)
    backend = make_backend(url)
    try:
        remote = await backend.upload(tmp_path / "b.webm", "k/b.webm", sealed, detached(sealed))
    finally:
        await backend.close()
    assert remote.size == len(data)
    first, *rest = s3.bodies
    assert [n for n, _ in rest].count(first[0]) == 1  # the failed part went again...
    again = next(b for n, b in rest if n == first[0])
    assert again == first[1] == data[(first[0] - 1) * 5 * MIB :][: len(first[1])]  # ...whole
    assert b"".join(s3.parts[n][0] for n in sorted(s3.parts)) == data
