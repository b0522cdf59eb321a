"""The uploader fed from the object store (SeaweedFS), against its floor in the same run.

(a) CPU seconds per GiB (a 1 GiB object, median of 3) of ``S3Backend.upload`` reading a sealed
    file straight from the backup store (``StoreSource``: one streaming GET, SHA-256, CRC-32,
    multipart send, confirm) into the discarding S3 sink of ``bench_uploader``, against the
    floor: the same object read with one raw HTTP GET (a presigned URL on a plain socket) into
    one reused buffer, SHA-256 and CRC-32 over it, and sent as one raw HTTP PUT, in one plain
    loop (no HTTP client, no S3 SDK, no event loop). Only this process's CPU is counted:
    SeaweedFS and the sink run in processes of their own.
(b) Peak RSS of a fresh process doing (a) for a 1 GiB object, against a 256 MiB one: flat.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.bench_uploader import CONCURRENCY, PART, SINK, _cpu, _start

MIB = 1 << 20
KEY = "ten_bench/rec_bench/output-1/{name}"

CHILD = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[2])
from bench.bench_uploader_store import upload_from_store
asyncio.run(upload_from_store(json.loads(sys.argv[1])))
print(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1])
"""


def _store(job: dict[str, Any]) -> Any:
    from shared.backupstore.config import from_url

    return from_url(
        f"s3://{job['bucket']}/backup",
        endpoint=job["endpoint"],
        region="us-east-1",
        access_key_id=job["access_key_id"],
        secret_access_key_file=Path(job["secret_file"]),
    )


async def upload_from_store(job: dict[str, Any]) -> None:
    """One upload of ``job['key']`` from the backup store to the sink."""
    from services.uploader.resume import detached
    from services.uploader.s3 import S3Backend
    from services.uploader.source import StoreSource
    from shared.events.transcodes import SealedFile

    sealed = SealedFile(
        name=job["name"],
        role="media",
        size=job["size"],
        sha256=job["sha256"],
        crc32=0,
        content_type="video/webm",
    )
    store = _store(job)
    backend = S3Backend(
        {"bucket": "bench", "endpoint_url": job["sink"], "path_style": True},
        {"access_key_id": "bench", "secret_access_key": "bench"},
        part_size=PART,
        part_concurrency=CONCURRENCY,
    )
    try:
        source = StoreSource(store, job["key"], sealed)
        await backend.upload(source, job["name"], sealed, detached(sealed))
    finally:
        await backend.close()
        await store.close()


def _floor(get_url: str, size: int, sink_port: int) -> None:
    """Raw GET from the store, SHA-256 a STEP at a time, CRC-32, raw PUT to the sink."""
    from isal.isal_zlib import crc32

    from services.uploader.source import STEP

    url = urlsplit(get_url)
    view = memoryview(bytearray(PART))
    sha, crc = hashlib.sha256(), 0
    src = socket.create_connection((url.hostname, url.port))
    dst = socket.create_connection(("127.0.0.1", sink_port))
    with src, dst:
        src.sendall(
            f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += src.recv(65536)
        head, _, first = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:80]
        dst.sendall(
            f"PUT /bench/raw HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        view[: len(first)] = first
        n, total = len(first), len(first)
        sha.update(view[:n])
        while True:
            while n < PART and total < size and (got := src.recv_into(view[n : n + STEP])):
                sha.update(view[n : n + got])
                n += got
                total += got
            if not n:
                break
            crc = crc32(view[:n], crc)
            dst.sendall(view[:n])
            n = 0
        dst.recv(4096)
    assert total == size


def run() -> list[dict[str, object]]:
    from shared.embedded import python_env
    from tests.seaweed import seaweed_s3

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_name, seaweed_s3(Path(tmp_name) / "weed") as weed:
        tmp = Path(tmp_name)
        bucket = weed.new_bucket(f"bench-{secrets.token_hex(3)}")
        secret_file = tmp / "secret"
        secret_file.write_text(weed.secret_access_key)
        secret_file.chmod(0o600)
        s3 = weed.client()
        sink, sink_port = _start([sys.executable, "-c", SINK])
        jobs: dict[str, dict[str, Any]] = {}
        try:
            for label, size in (("256m", 256 * MIB), ("1g", 1024 * MIB)):
                path = tmp / f"{label}.webm"
                sha = hashlib.sha256()
                block = os.urandom(MIB)
                with path.open("wb") as fh:
                    for _ in range(size // MIB):
                        fh.write(block)
                        sha.update(block)
                key = KEY.format(name=path.name)
                s3.upload_file(str(path), bucket, f"backup/{key}")
                path.unlink()
                jobs[label] = {
                    "bucket": bucket,
                    "endpoint": weed.endpoint,
                    "access_key_id": weed.access_key_id,
                    "secret_file": str(secret_file),
                    "key": key,
                    "name": path.name,
                    "size": size,
                    "sha256": sha.hexdigest(),
                    "sink": f"http://127.0.0.1:{sink_port}",
                }
            # The 1 GiB object: per-upload set-up (two S3 clients, a HEAD, a presign: ~0.1 s of
            # CPU) is a fixed cost that would weigh a quarter more on 256 MiB.
            job = jobs["1g"]
            get_url = s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": f"backup/{job['key']}"}
            )
            asyncio.run(upload_from_store(job))  # warm-up (imports, connections)
            ours, floor = [], []
            for _ in range(3):
                floor.append(_cpu(lambda: _floor(get_url, job["size"], sink_port)))
                ours.append(_cpu(lambda: asyncio.run(upload_from_store(job))))
            o, f = (statistics.median(x) for x in (ours, floor))
            rows.append(
                {
                    "name": "Uploader from the object store (SeaweedFS GET, SHA-256, CRC-32, "
                    "multipart send, confirm) to a local S3 sink, CPU s per GiB",
                    "ours": f"{o:.3f} s",
                    "baseline": f"{f:.3f} s (raw GET + SHA-256 + CRC-32 + raw PUT, one loop)",
                    "ratio": o / f,
                    "goal": "<= 1.15x",
                }
            )
            rss = {}
            for label in ("256m", "1g"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, json.dumps(jobs[label]), str(Path.cwd())],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=python_env(),
                )
                rss[label] = int(out.stdout.strip().splitlines()[-1]) / 1024
            rows.append(
                {
                    "name": "Uploader peak RSS sending 1 GiB from the object store (8 MiB parts, "
                    f"{CONCURRENCY} in flight)",
                    "ours": f"{rss['1g']:.0f} MiB",
                    "baseline": f"{rss['256m']:.0f} MiB (256 MiB)",
                    "ratio": rss["1g"] / rss["256m"],
                    "goal": "flat (1.0x)",
                }
            )
        finally:
            sink.kill()
            sink.wait()
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
