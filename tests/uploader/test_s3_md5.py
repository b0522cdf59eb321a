"""S3 ``checksum=md5``, for S3-compatible stores that reject flexible checksums: no
``ChecksumAlgorithm``, ``Content-MD5`` on every put and part, confirmed by the ETag. Against a real
moto server; the requests are read as the client sends them (moto accepts a wrong Content-MD5,
so the headers themselves are checked)."""

from __future__ import annotations

import base64
import hashlib
import zlib
from pathlib import Path
from typing import Any

import pytest

from services.uploader.partbody import PartBody
from services.uploader.resume import ResumeStore, detached
from services.uploader.s3 import S3Backend
from shared.events.transcodes import SealedFile
from shared.providers import FieldError, split_config
from tests.servers import MotoS3

from .storage import MIB, new_name

PART = 5 * MIB


def config(s3: MotoS3, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "endpoint_url": s3.url,
        "region": s3.region,
        "path_style": True,
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
        "checksum": "md5",
        **extra,
    }


def make_backend(s3: MotoS3, bucket: str, **extra: Any) -> S3Backend:
    public, secret = split_config("s3", config(s3, bucket, **extra))
    return S3Backend(public, secret, part_size=PART)


def sealed_file(path: Path, size: int) -> SealedFile:
    data = (hashlib.sha256(path.name.encode()).digest() * (size // 32 + 1))[:size]
    path.write_bytes(data)
    return SealedFile(
        name=path.name,
        role="media",
        size=size,
        sha256=hashlib.sha256(data).hexdigest(),
        crc32=zlib.crc32(data),
    )


async def recorder(backend: S3Backend) -> list[tuple[str, dict[str, str], bytes]]:
    """(operation, headers, body) of every request the backend's client sends."""
    sent: list[tuple[str, dict[str, str], bytes]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        body = bytes(request.body) if isinstance(request.body, bytes | PartBody) else b""
        headers = {
            str(k): v.decode() if isinstance(v, bytes) else str(v)
            for k, v in request.headers.items()
        }
        sent.append((event_name.rsplit(".", 1)[-1], headers, body))

    client = await backend._c()
    client.meta.events.register("before-send.s3", record)
    return sent


def md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def assert_md5_only(sent: list[tuple[str, dict[str, str], bytes]], op: str) -> int:
    """Every ``op`` request carried the right Content-MD5 and no flexible checksum header."""
    n = 0
    for name, headers, body in sent:
        lower = {k.lower(): v for k, v in headers.items()}
        assert not any(k.startswith(("x-amz-checksum", "x-amz-sdk-checksum")) for k in lower)
        if name == op:
            assert lower["content-md5"] == base64.b64encode(md5(body)).decode()
            n += 1
    return n


async def test_single_put_sends_content_md5_and_is_confirmed_by_its_etag(
    s3_server: MotoS3, tmp_path: Path
) -> None:
    bucket = new_name()
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    sealed = sealed_file(tmp_path / "small.webm", 100_000)
    backend = make_backend(s3_server, bucket)
    try:
        sent = await recorder(backend)
        remote = await backend.upload(
            tmp_path / "small.webm", "a/small.webm", sealed, detached(sealed)
        )
    finally:
        await backend.close()
    data = (tmp_path / "small.webm").read_bytes()
    assert assert_md5_only(sent, "PutObject") == 1
    assert remote.checksum_algorithm == "MD5" and remote.checksum == md5(data).hex()
    head = s3.head_object(Bucket=bucket, Key="a/small.webm", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"') == remote.checksum
    assert "ChecksumCRC32" not in head  # no flexible checksum was asked for
    assert s3.get_object(Bucket=bucket, Key="a/small.webm")["Body"].read() == data


async def test_multipart_sends_content_md5_per_part_and_checks_the_composite_etag(
    s3_server: MotoS3, tmp_path: Path
) -> None:
    bucket = new_name()
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "big.webm"
    sealed = sealed_file(local, 2 * PART + 12345)
    backend = make_backend(s3_server, bucket)
    try:
        sent = await recorder(backend)
        remote = await backend.upload(local, "a/big.webm", sealed, detached(sealed))
    finally:
        await backend.close()
    data = local.read_bytes()
    parts = [data[i : i + PART] for i in range(0, len(data), PART)]
    expected = hashlib.md5(b"".join(md5(p) for p in parts), usedforsecurity=False).hexdigest()
    assert assert_md5_only(sent, "UploadPart") == 3
    assert remote.checksum_algorithm == "MD5" and remote.checksum == f"{expected}-3"
    head = s3.head_object(Bucket=bucket, Key="a/big.webm", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"') == f"{expected}-3" and "ChecksumCRC32" not in head
    assert s3.get_object(Bucket=bucket, Key="a/big.webm")["Body"].read() == data


async def test_an_md5_multipart_upload_resumes_from_the_parts_it_holds(
    s3_server: MotoS3, tmp_path: Path
) -> None:
    bucket, key = new_name(), "a/resumed.webm"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "resumed.webm"
    sealed = sealed_file(local, 2 * PART + 1)
    data = local.read_bytes()
    # What an attempt killed after its first part left behind.
    upload_id = s3.create_multipart_upload(
        Bucket=bucket, Key=key, Metadata={"sha256": sealed.sha256}
    )["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=data[:PART])
    slot = ResumeStore(tmp_path).slot("dest", key, sealed)
    state = {"bucket": bucket, "key": key, "upload_id": upload_id, "part_size": PART}
    await slot.save("s3-multipart", {**state, "checksum": "md5"})
    backend = make_backend(s3_server, bucket)
    try:
        sent = await recorder(backend)
        remote = await backend.upload(local, key, sealed, slot)
    finally:
        await backend.close()
    assert assert_md5_only(sent, "UploadPart") == 2  # part 1 was not sent again
    assert remote.checksum.endswith("-3")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert await slot.load("s3-multipart") is None


async def test_crc32_stays_the_default(s3_server: MotoS3, tmp_path: Path) -> None:
    bucket = new_name()
    s3_server.client().create_bucket(Bucket=bucket)
    sealed = sealed_file(tmp_path / "x.webm", 1000)
    backend = make_backend(s3_server, bucket, checksum=None)
    try:
        sent = await recorder(backend)
        remote = await backend.upload(tmp_path / "x.webm", "x.webm", sealed, detached(sealed))
    finally:
        await backend.close()
    assert remote.checksum_algorithm == "CRC32"
    (_, headers, _), *_ = [s for s in sent if s[0] == "PutObject"]
    assert "x-amz-checksum-crc32" in {k.lower() for k in headers}


def test_the_checksum_setting_is_validated() -> None:
    with pytest.raises(FieldError) as err:
        split_config(
            "s3",
            {"bucket": "b", "access_key_id": "a", "secret_access_key": "s", "checksum": "sha1"},
        )
    assert err.value.field == "config.checksum"
    public, _ = split_config(
        "s3", {"bucket": "b", "access_key_id": "a", "secret_access_key": "s", "checksum": "md5"}
    )
    assert public["checksum"] == "md5"  # not a secret
