"""The uploader's S3 pipeline: CPU per GiB, wall time against boto3, and peak memory.

(a) CPU seconds per GiB of ``S3Backend.upload`` (read, SHA-256, CRC-32, send through aiobotocore,
    confirm) into a minimal local S3 sink (a separate process that speaks just enough S3 and
    discards the bytes: moto is too slow to keep a sender busy, and its CPU is not ours), against
    SHA-256 alone over the same bytes in memory, same run. Three more rows show where it goes:
    read + SHA-256 + CRC-32 without sending (the read path ``upload`` uses), the transport alone
    (the same bytes as one raw HTTP PUT on a plain socket, nothing hashed; on loopback the
    sender's process also pays for the kernel's copy and much of the receiving side's TCP work),
    and the floor: read, both checksums and that raw PUT in one plain loop, the least any
    single-pass sender that reads the file (to hash exactly what it sends) can spend here.
(b) Wall time of ``S3Backend.upload`` against boto3's ``upload_file`` (default TransferConfig:
    8 MiB parts, 10 threads) of the same file to the same moto server, interleaved, median of 3.
(c) Peak RSS of a fresh process uploading a 2 GiB file into the sink, against a 256 MiB one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20
PART = 8 * MIB
CONCURRENCY = 2

SINK = r"""
import sys
from aiohttp import web
from isal.isal_zlib import crc32
import base64

objects = {}
uploads = {}

def xml(body, status=200):
    return web.Response(text='<?xml version="1.0" encoding="UTF-8"?>' + body, status=status,
                        content_type="application/xml")

async def drain(request):
    n = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        n += len(chunk)
    return n

async def handle(request):
    key = request.match_info.get("key", "")
    q = request.query
    if request.method == "POST" and "uploads" in q:
        uploads[key] = {"meta": request.headers.get("x-amz-meta-sha256", ""), "parts": {}}
        return xml(f"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>{key}</Key>"
                   f"<UploadId>u1</UploadId></InitiateMultipartUploadResult>")
    if request.method == "PUT" and "partNumber" in q:
        n = await drain(request)
        crc = request.headers.get("x-amz-checksum-crc32", "")
        uploads[key]["parts"][int(q["partNumber"])] = (n, crc)
        return web.Response(headers={"ETag": '"e"', "x-amz-checksum-crc32": crc})
    if request.method == "POST" and "uploadId" in q:
        await request.read()
        up = uploads.pop(key)
        parts = [up["parts"][i] for i in sorted(up["parts"])]
        raw = b"".join(base64.b64decode(c) for _, c in parts)
        comp = base64.b64encode(crc32(raw).to_bytes(4, "big")).decode() + f"-{len(parts)}"
        objects[key] = (sum(n for n, _ in parts), up["meta"], comp)
        return xml(f"<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>{key}</Key>"
                   f"<ETag>\"e-{len(parts)}\"</ETag></CompleteMultipartUploadResult>")
    if request.method == "PUT":
        n = await drain(request)
        objects[key] = (n, request.headers.get("x-amz-meta-sha256", ""),
                        request.headers.get("x-amz-checksum-crc32", ""))
        return web.Response(headers={"ETag": '"e"'})
    if request.method == "HEAD":
        n, meta, crc = objects[key]
        return web.Response(headers={"Content-Length": str(n), "x-amz-meta-sha256": meta,
                                     "x-amz-checksum-crc32": crc, "ETag": '"e"'})
    if request.method == "GET" and "uploads" in q:
        return xml("<ListMultipartUploadsResult><Bucket>b</Bucket></ListMultipartUploadsResult>")
    if request.method == "DELETE":
        return web.Response(status=204)
    return web.Response(status=400)

async def main():
    app = web.Application(client_max_size=1 << 34)
    app.router.add_route("*", "/{bucket}/{key:.*}", handle)
    app.router.add_route("*", "/{bucket}", handle)  # bucket-level calls: ListMultipartUploads
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    import asyncio
    await asyncio.Event().wait()

import asyncio
asyncio.run(main())
"""

CHILD = r"""
import asyncio, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from bench.bench_uploader import upload_once
asyncio.run(upload_once(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
# VmHWM, not ru_maxrss: ru_maxrss survives execve and would report the parent's size.
print(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1])
"""


def _write(path: Path, size: int) -> str:
    block = os.urandom(MIB)
    sha = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(size // MIB):
            fh.write(block)
            sha.update(block)
    return sha.hexdigest()


def _sealed(path: Path, sha: str) -> Any:
    from shared.events.transcodes import SealedFile

    return SealedFile(
        name=path.name,
        role="media",
        size=path.stat().st_size,
        sha256=sha,
        crc32=0,
        content_type="video/webm",
    )


async def upload_once(path: Path, sha: str, url: str, bucket: str = "bench") -> float:
    """One S3Backend upload; returns its wall time."""
    from services.uploader.resume import detached
    from services.uploader.s3 import S3Backend

    sealed = _sealed(path, sha)
    backend = S3Backend(
        {"bucket": bucket, "endpoint_url": url, "path_style": True, "region": "us-east-1"},
        {"access_key_id": "bench", "secret_access_key": "bench"},
        part_size=PART,
        part_concurrency=CONCURRENCY,
    )
    t0 = time.perf_counter()
    try:
        await backend.upload(path, path.name, sealed, detached(sealed))
    finally:
        await backend.close()
    return time.perf_counter() - t0


async def _read_hash_only(path: Path, sha: str) -> None:
    from isal.isal_zlib import crc32

    from services.uploader.source import Buffers, LocalReader

    # The read path S3Backend.upload uses: into reused part buffers, off the event loop.
    buffers = Buffers(PART, CONCURRENCY + 1)
    reader = LocalReader(path, _sealed(path, sha), PART)
    async for chunk, _ in reader.chunks_into(buffers, crc32):
        buffers.give(chunk.obj)
    reader.verify()


def _start(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _sha_only(path: Path, size: int) -> float:
    """CPU seconds of SHA-256 over ``size`` bytes (the file's first part, in memory)."""
    with path.open("rb") as fh:
        block = fh.read(PART)
    h = hashlib.sha256()
    t0 = time.process_time()
    for _ in range(size // PART):
        h.update(block)
    h.hexdigest()
    return time.process_time() - t0


def _raw_send(path: Path, port: int) -> None:
    """The transport alone: the same bytes as one HTTP PUT over a plain socket (no hashing)."""
    import socket

    size = path.stat().st_size
    with socket.create_connection(("127.0.0.1", port)) as sock, path.open("rb") as fh:
        head = f"PUT /bench/raw HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        sock.sendall(head.encode())
        while data := fh.read(PART):
            sock.sendall(data)
        sock.recv(4096)


def _floor(path: Path, port: int) -> None:
    """The least a single-pass sender can spend here: each part read into one reused buffer and
    SHA-256'd as it comes in (the steps ``upload`` reads in), CRC-32'd, and sent on one raw
    HTTP PUT over a blocking socket: no HTTP client, no S3, no event loop, no thread."""
    import socket

    from isal.isal_zlib import crc32

    from services.uploader.source import STEP

    size = path.stat().st_size
    view = memoryview(bytearray(PART))
    sha, crc = hashlib.sha256(), 0
    with socket.create_connection(("127.0.0.1", port)) as sock, path.open("rb") as fh:
        head = f"PUT /bench/raw HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        sock.sendall(head.encode())
        while True:
            n = 0
            while n < PART and (got := fh.readinto(view[n : n + STEP])):
                sha.update(view[n : n + got])
                n += got
            if not n:
                break
            crc = crc32(view[:n], crc)
            sock.sendall(view[:n])
        sock.recv(4096)


def _cpu(fn: Any) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def run() -> list[dict[str, object]]:
    from shared.embedded import free_port, python_env, wait_for_port

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small, big = tmp / "256m.webm", tmp / "2g.webm"
        sha_small = _write(small, 256 * MIB)
        sink, sink_port = _start([sys.executable, "-c", SINK])
        sink_url = f"http://127.0.0.1:{sink_port}"
        try:
            # (a) CPU per GiB, interleaved with the baseline, medians of 5.
            asyncio.run(upload_once(small, sha_small, sink_url))  # warm-up
            ours, base, bare, wire, least = [], [], [], [], []
            for _ in range(5):
                base.append(_sha_only(small, 256 * MIB))
                ours.append(_cpu(lambda: asyncio.run(upload_once(small, sha_small, sink_url))))
                bare.append(_cpu(lambda: asyncio.run(_read_hash_only(small, sha_small))))
                wire.append(_cpu(lambda: _raw_send(small, sink_port)))
                least.append(_cpu(lambda: _floor(small, sink_port)))
            gib = 256 / 1024
            b, o, r, w, f = (statistics.median(x) / gib for x in (base, ours, bare, wire, least))
            rows.append(
                {
                    "name": "Uploader S3 pipeline (read, SHA-256, CRC-32, send, confirm) to a "
                    "local S3 sink, CPU s per GiB",
                    "ours": f"{o:.3f} s",
                    "baseline": f"{b:.3f} s (SHA-256 alone)",
                    "ratio": o / b,
                    "goal": "<= 1.1x",
                }
            )
            rows.append(
                {
                    "name": "  of which read + SHA-256 + CRC-32 (no send), CPU s per GiB",
                    "ours": f"{r:.3f} s",
                    "baseline": f"{b:.3f} s (SHA-256 alone)",
                    "ratio": r / b,
                    "goal": "(breakdown)",
                }
            )
            rows.append(
                {
                    "name": "  the transport alone (read + one raw HTTP PUT over loopback TCP, "
                    "no hashing), CPU s per GiB",
                    "ours": f"{w:.3f} s",
                    "baseline": f"{b:.3f} s (SHA-256 alone)",
                    "ratio": w / b,
                    "goal": "(breakdown)",
                }
            )
            rows.append(
                {
                    "name": "  the floor: read + SHA-256 + CRC-32 + one raw HTTP PUT in one plain "
                    "loop (no HTTP client, no S3), CPU s per GiB",
                    "ours": f"{f:.3f} s",
                    "baseline": f"{b:.3f} s (SHA-256 alone)",
                    "ratio": f / b,
                    "goal": "(breakdown)",
                }
            )

            # (c) Peak RSS of a fresh process: 2 GiB against 256 MiB.
            sha_big = _write(big, 2048 * MIB)
            rss = {}
            for label, path, sha in (("256m", small, sha_small), ("2g", big, sha_big)):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path), sha, sink_url, str(Path.cwd())],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=python_env(),
                )
                rss[label] = int(out.stdout.strip().splitlines()[-1]) / 1024  # kB -> MiB
            big.unlink()
            rows.append(
                {
                    "name": "Uploader peak RSS uploading a 2 GiB recording (S3, 8 MiB parts, "
                    f"{CONCURRENCY} in flight)",
                    "ours": f"{rss['2g']:.0f} MiB",
                    "baseline": f"{rss['256m']:.0f} MiB (256 MiB recording)",
                    "ratio": rss["2g"] / rss["256m"],
                    "goal": "< 128 MiB, flat (1.0x)",
                }
            )
        finally:
            sink.kill()
            sink.wait()

        # (b) Wall time against boto3 upload_file, same moto server, same file.
        import boto3

        port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=python_env(),
        )
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            url = f"http://127.0.0.1:{port}"
            s3 = boto3.client(
                "s3",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            s3.create_bucket(Bucket="bench")
            mine, theirs = [], []
            for _ in range(3):
                mine.append(asyncio.run(upload_once(small, sha_small, url)))
                s3.delete_object(Bucket="bench", Key=small.name)
                t0 = time.perf_counter()
                s3.upload_file(str(small), "bench", "boto3.webm")
                theirs.append(time.perf_counter() - t0)
                s3.delete_object(Bucket="bench", Key="boto3.webm")
            m, t = statistics.median(mine), statistics.median(theirs)
            rows.append(
                {
                    "name": "Uploader S3 upload of 256 MiB to moto (with SHA-256 and confirm), "
                    "wall time",
                    "ours": f"{m:.2f} s",
                    "baseline": f"{t:.2f} s (boto3 upload_file)",
                    "ratio": m / t,
                    "goal": "<= 1.0x",
                }
            )
        finally:
            moto.terminate()
            moto.wait(10)
    return rows
