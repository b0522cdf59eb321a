"""Sending a file to S3: read once, SHA-256 and CRC-32 from the bytes that are sent.

A file smaller than one part is one ``put_object``, checked against its SHA-256 before anything
is sent. A larger one is a multipart upload with each part's CRC-32, checked before it is
completed and aborted otherwise (also on any failure or cancellation), so a wrong file never
becomes visible. Parts go one after the other: memory is one part.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
from pathlib import Path
from typing import Any, BinaryIO

from isal.isal_zlib import crc32

from .base import b64_crc32, composite_crc32
from .errors import BackupStoreError, ChecksumMismatch
from .s3client import Bucket


def read_part(fh: BinaryIO, size: int, sha: Any) -> tuple[bytes, int]:
    data = fh.read(size)
    sha.update(data)
    return data, crc32(data)


async def put_object(bucket: Bucket, key: str, body: bytes, *, sha256: str, crc_b64: str) -> bool:
    """The low-level put: one request carrying our CRC-32, for the store to validate. Returns
    whether the store's answer echoes that CRC-32: it then validated and stored these bytes, and
    a HEAD to confirm them would say nothing more (on a store that does not validate, such as
    moto, it would not either)."""
    resp = await bucket.call(
        "store",
        key,
        "put_object",
        Key=bucket.full(key),
        Body=body,
        ChecksumAlgorithm="CRC32",
        ChecksumCRC32=crc_b64,
        Metadata={"sha256": sha256},
    )
    return bool(resp.get("ChecksumCRC32")) and resp["ChecksumCRC32"] == crc_b64


async def upload_file(
    bucket: Bucket, key: str, local_path: Path, *, sha256: str, part_size: int
) -> tuple[int, str, bool]:
    """Send ``local_path``; returns its size, the CRC-32 the store should report, and whether
    the store's answer already confirmed it (a single put whose CRC-32 it echoed)."""
    try:
        fh = await asyncio.to_thread(Path(local_path).open, "rb")
    except OSError as exc:
        raise BackupStoreError(
            f"the local file {local_path} could not be read ({exc.strerror})"
        ) from None
    try:
        sha = hashlib.sha256()
        first, first_crc = await asyncio.to_thread(read_part, fh, part_size, sha)
        if len(first) < part_size:  # the whole file
            if sha.hexdigest() != sha256:
                raise ChecksumMismatch(
                    f"the local file for {key} does not match its SHA-256; nothing was sent"
                )
            crc_b64 = b64_crc32(first_crc)
            echoed = await put_object(bucket, key, first, sha256=sha256, crc_b64=crc_b64)
            return len(first), crc_b64, echoed
        size, crc_b64 = await _multipart(bucket, key, fh, sha, sha256, first, first_crc, part_size)
        return size, crc_b64, False
    except OSError as exc:
        raise BackupStoreError(
            f"the local file {local_path} could not be read ({exc.strerror})"
        ) from None
    finally:
        fh.close()


async def _multipart(
    bucket: Bucket,
    key: str,
    fh: BinaryIO,
    sha: Any,
    sha256: str,
    chunk: bytes,
    chunk_crc: int,
    part_size: int,
) -> tuple[int, str]:
    full = bucket.full(key)
    created = await bucket.call(
        "start uploading",
        key,
        "create_multipart_upload",
        Key=full,
        ChecksumAlgorithm="CRC32",
        Metadata={"sha256": sha256},
    )
    upload_id = str(created["UploadId"])
    completed = False
    try:
        parts: builtins.list[dict[str, Any]] = []
        crcs: builtins.list[int] = []
        size = 0
        while chunk:
            number = len(parts) + 1
            crc_b64 = b64_crc32(chunk_crc)
            resp = await bucket.call(
                f"upload part {number} of",
                key,
                "upload_part",
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ChecksumAlgorithm="CRC32",
                ChecksumCRC32=crc_b64,
            )
            if resp.get("ChecksumCRC32") not in (None, crc_b64):
                raise ChecksumMismatch(
                    f"{bucket.where} stored part {number} of {key} with another CRC-32 than "
                    "was sent; send it again",
                    transient=True,
                )
            parts.append({"ETag": resp["ETag"], "PartNumber": number, "ChecksumCRC32": crc_b64})
            crcs.append(chunk_crc)
            size += len(chunk)
            chunk, chunk_crc = await asyncio.to_thread(read_part, fh, part_size, sha)
        if sha.hexdigest() != sha256:  # before the object becomes visible
            raise ChecksumMismatch(
                f"the local file for {key} does not match its SHA-256; the upload was aborted"
            )
        await bucket.call(
            "complete the upload of",
            key,
            "complete_multipart_upload",
            Key=full,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
        completed = True
        return size, composite_crc32(crcs)
    finally:
        if not completed:
            client = await bucket.client()
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    client.abort_multipart_upload(Bucket=bucket.name, Key=full, UploadId=upload_id)
                )
