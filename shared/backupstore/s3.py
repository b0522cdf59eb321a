"""The backup in any S3-compatible object store (SeaweedFS, MinIO, Ceph RGW, AWS S3).

Every upload carries ``ChecksumAlgorithm=CRC32`` with our CRC-32 (per part for multipart), so
a store that validates checksums (SeaweedFS, AWS) refuses bytes damaged on the way
(``BadDigest``) instead of storing them; the SHA-256 goes in the ``sha256`` metadata, and every
object is confirmed with a HEAD afterwards (size, SHA-256, CRC-32). How files are sent, read
once and never visible when wrong, is in ``s3upload.py``; the client and its credentials in
``s3client.py``; the mapping of SDK errors in ``s3errors.py``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from isal.isal_zlib import crc32 as crc32_of

from ..integrity import CHUNK
from . import blocking
from .base import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    StoredObject,
    b64_crc32,
    check_key,
    check_prefix,
    same_crc32,
    tally,
)
from .blocking import BlockingRead
from .errors import (
    BackupStoreError,
    ChecksumMismatch,
    ObjectMissing,
    StoreRefused,
    StoreUnavailable,
    UnsafeKey,
)
from .s3client import Bucket
from .s3errors import client_error, code_and_status, is_missing, map_error
from .s3upload import put_object, upload_file

log = logging.getLogger(__name__)


class S3BackupStore:
    """``BackupStore`` on ``s3://bucket/prefix``; keys live at ``<prefix>/<key>``."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        check_timeout: float = 5.0,
        attempts: int = 2,
        page_size: int = 1000,
        delete_batch: int = 1000,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.bucket = bucket
        self.prefix = check_prefix(prefix)
        self.endpoint = endpoint
        self.part_size = part_size
        self.check_timeout = check_timeout
        self.read_timeout = read_timeout
        self.page_size = page_size
        self.delete_batch = min(delete_batch, 1000)  # DeleteObjects' limit
        self._b = Bucket(
            bucket,
            self.prefix,
            endpoint=endpoint,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempts=attempts,
        )
        self._where = self._b.where

    def __repr__(self) -> str:
        return f"S3BackupStore({self.url!r}, endpoint={self.endpoint!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    async def close(self) -> None:
        await self._b.close()

    async def put_file(self, key: str, local_path: Path, *, sha256: str) -> StoredObject:
        check_key(key)
        size, crc_b64, echoed = await upload_file(
            self._b, key, local_path, sha256=sha256, part_size=self.part_size
        )
        if echoed:  # one request per segment, not two: the proxy puts one every few seconds
            return StoredObject(key, size, sha256, crc_b64)
        return await self._confirm(key, size, sha256, crc_b64)

    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str | None = None, crc32: int | None = None
    ) -> StoredObject:
        check_key(key)
        actual, crc = await asyncio.to_thread(
            lambda: (hashlib.sha256(data).hexdigest(), crc32_of(data))
        )
        if sha256 is not None and actual != sha256:
            raise ChecksumMismatch(f"the bytes for {key} do not match their SHA-256; not sent")
        # A caller's CRC-32 is sent as given: the store, not this client, checks it.
        sent = b64_crc32(crc if crc32 is None else crc32)
        if await put_object(self._b, key, data, sha256=actual, crc_b64=sent):
            return StoredObject(key, len(data), actual, sent)
        return await self._confirm(key, len(data), actual, sent)

    async def _confirm(self, key: str, size: int, sha256: str, crc_b64: str) -> StoredObject:
        obj = await self.stat(key)
        if obj is None or obj.size != size or obj.sha256 != sha256:
            raise ChecksumMismatch(
                f"{self._where} does not report {key} as it was sent (size or SHA-256 metadata); "
                "send it again",
                transient=True,
            )
        if obj.crc32 is not None and not same_crc32(obj.crc32, crc_b64):
            raise ChecksumMismatch(
                f"{self._where} stored {key} with another CRC-32 than was sent; send it again",
                transient=True,
            )
        return obj

    async def stat(self, key: str) -> StoredObject | None:
        """A missing bucket looks like a missing key here (HEAD answers carry no code)."""
        check_key(key)
        client = await self._b.client()
        try:
            head = await client.head_object(
                Bucket=self.bucket, Key=self._b.full(key), ChecksumMode="ENABLED"
            )
        except Exception as exc:
            if is_missing(exc):
                return None
            raise map_error(exc, action="look at", key=key, where=self._where) from None
        meta = head.get("Metadata") or {}
        return StoredObject(
            key, int(head["ContentLength"]), meta.get("sha256"), head.get("ChecksumCRC32")
        )

    async def open_read(self, key: str, *, start: int = 0) -> AsyncIterator[bytes]:
        if start < 0:
            raise ValueError("start must not be negative")
        check_key(key)
        client = await self._b.client()
        # A whole object is checked against its CRC-32 as it streams (ranges have none).
        args: dict[str, Any] = (
            {"Range": f"bytes={start}-"} if start else {"ChecksumMode": "ENABLED"}
        )
        try:
            resp = await client.get_object(Bucket=self.bucket, Key=self._b.full(key), **args)
        except ClientError as exc:
            if code_and_status(exc)[0] != "InvalidRange":
                raise map_error(exc, action="read", key=key, where=self._where) from None
            obj = await self.stat(key)
            if obj is None:
                raise ObjectMissing(f"{self._where} holds nothing at {key}") from None
            if obj.size == start:
                return  # resuming at the very end: nothing left to read
            raise BackupStoreError(
                f"cannot read {key} from byte {start}: it holds {obj.size} bytes"
            ) from None
        except Exception as exc:
            raise map_error(exc, action="read", key=key, where=self._where) from None
        async with resp["Body"] as body:
            while True:
                try:
                    chunk = await body.read(CHUNK)
                except Exception as exc:
                    raise map_error(exc, action="read", key=key, where=self._where) from None
                if not chunk:
                    return
                yield chunk

    async def open_blocking(self, key: str, *, start: int = 0) -> BlockingRead:
        if start < 0:
            raise ValueError("start must not be negative")
        check_key(key)
        client = await self._b.client()
        try:
            url = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._b.full(key)},
                ExpiresIn=blocking.PRESIGN_SECONDS,
            )
        except Exception as exc:
            raise map_error(exc, action="read", key=key, where=self._where) from None
        opened = await asyncio.to_thread(
            blocking.get, url, start=start, timeout=self.read_timeout, key=key, where=self._where
        )
        del url  # a bearer capability for this object: not kept a moment longer than needed
        if opened is not None:
            return opened
        obj = await self.stat(key)
        if obj is not None and obj.size == start:
            return io.BytesIO(b"")  # resuming at the very end: nothing left to read
        raise BackupStoreError(
            f"cannot read {key} from byte {start}: it holds "
            f"{'nothing' if obj is None else f'{obj.size} bytes'}"
        )

    async def read_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.open_read(key)])

    async def _list_raw(self, prefix: str) -> builtins.list[tuple[str, int]]:
        """Every (object name, size) under the folder ``prefix``, page after page."""
        base = self._b.full(prefix) if prefix else self.prefix
        args: dict[str, Any] = {"Prefix": base + "/"} if base else {}
        found: builtins.list[tuple[str, int]] = []
        while True:
            page = await self._b.call(
                "list", prefix or "the backup", "list_objects_v2", MaxKeys=self.page_size, **args
            )
            found.extend((o["Key"], int(o.get("Size", 0))) for o in page.get("Contents") or [])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return found
            args["ContinuationToken"] = token

    async def list(self, prefix: str = "") -> builtins.list[StoredObject]:
        """Keys and sizes (an S3 listing carries no metadata: ``stat`` a key for its digests).
        Objects whose names are not keys of ours (put there by something else) are left out."""
        objects = []
        for full, size in await self._list_raw(check_prefix(prefix)):
            with contextlib.suppress(UnsafeKey):
                objects.append(StoredObject(check_key(self._b.rel(full)), size))
        return sorted(objects, key=lambda o: o.key)

    async def delete(self, key: str) -> None:
        check_key(key)
        client = await self._b.client()
        try:
            await client.delete_object(Bucket=self.bucket, Key=self._b.full(key))
        except Exception as exc:
            if not is_missing(exc):  # some stores say NoSuchKey instead of 204
                raise map_error(exc, action="delete", key=key, where=self._where) from None

    async def delete_prefix(self, prefix: str) -> int:
        """Everything under the folder goes, whatever its names, and so do its unfinished
        multipart uploads (their parts hold recording bytes too)."""
        prefix = check_prefix(prefix)
        if not prefix:
            raise UnsafeKey("refusing to delete the whole backup: give a tenant or recording")
        names = [full for full, _ in await self._list_raw(prefix)]
        for i in range(0, len(names), self.delete_batch):
            batch = [{"Key": name} for name in names[i : i + self.delete_batch]]
            resp = await self._b.call(
                "delete", prefix, "delete_objects", Delete={"Objects": batch, "Quiet": True}
            )
            failed = [e for e in resp.get("Errors") or [] if e.get("Code") != "NoSuchKey"]
            if failed:
                error = client_error(str(failed[0].get("Code", "")), 0, "DeleteObjects")
                action = f"delete {len(failed)} objects under"
                raise map_error(error, action=action, key=prefix, where=self._where)
        try:
            await self._abort_uploads(prefix)
        except StoreRefused as exc:  # not allowed or not implemented: the objects are gone
            log.warning("could not abort unfinished uploads", extra={"reason": str(exc)})
        return len(names)

    async def _abort_uploads(self, prefix: str) -> None:
        args: dict[str, Any] = {"Prefix": self._b.full(prefix) + "/"}
        while True:
            page = await self._b.call(
                "list unfinished uploads of", prefix, "list_multipart_uploads", **args
            )
            for up in page.get("Uploads") or []:
                await self._b.call(
                    "abort an upload of",
                    prefix,
                    "abort_multipart_upload",
                    Key=up["Key"],
                    UploadId=up["UploadId"],
                )
            if not page.get("IsTruncated"):
                return
            args.update(
                KeyMarker=page.get("NextKeyMarker"), UploadIdMarker=page.get("NextUploadIdMarker")
            )

    async def usage_by_tenant(self) -> dict[str, int]:
        return tally(await self.list(""))

    async def check(self) -> None:
        """HEAD the bucket within ``check_timeout`` seconds, retries included."""
        client = await self._b.client()
        try:
            async with asyncio.timeout(self.check_timeout):
                await client.head_bucket(Bucket=self.bucket)
        except TimeoutError:
            raise StoreUnavailable(
                f"{self._where} did not answer within {self.check_timeout:g} s; check "
                "RESGUARDO_BACKUP_S3_ENDPOINT and that the store is running"
            ) from None
        except Exception as exc:
            if is_missing(exc):  # HEAD: a bare 404 is the bucket's
                exc = client_error("NoSuchBucket", 404, "HeadBucket")
            raise map_error(exc, action="open", key="the bucket", where=self._where) from None
