"""S3 (and S3-compatible) adapter: multipart upload with per-part CRC-32, confirmed afterwards.

- Files smaller than one part: ``put_object`` with ``ChecksumAlgorithm=CRC32`` and our CRC-32;
  the stored full-object CRC-32 must equal ours.
- Larger files: multipart with ``ChecksumAlgorithm=CRC32`` and each part's CRC-32; the stored
  checksum is the composite one (CRC-32 of the concatenated raw part checksums, ``-N`` suffix)
  and must equal ours.
- Always: ``x-amz-meta-sha256`` carries the sealed SHA-256; ``head_object(ChecksumMode=ENABLED)``
  afterwards must report the right size, checksum and metadata. With ``verify=readback`` the object
  is downloaded and re-hashed instead of trusting the provider's checksum (the only proof on
  stores that do not validate checksums, moto among them).

``checksum=md5`` (for S3-compatible stores that reject the flexible checksum headers): no
``ChecksumAlgorithm`` at all; every put / part carries ``Content-MD5`` instead, and the object is
confirmed by its ETag, which must be our MD5 (single put) or the MD5 of the concatenated raw part
MD5s with ``-N`` (multipart). A store whose ETag is not an MD5 (SSE-KMS, ...) needs
``verify=readback``. The event's checksum is then ``MD5``, the ETag's hex value.

The SHA-256 of the local file is computed in the same single pass that feeds the parts; a
mismatch aborts the multipart upload (nothing becomes visible) and is a permanent error.

Resume: the multipart upload id is kept in the recording's resume state (``resume.py``). A later
attempt (a retry, a re-send, a restart after kill -9) lists the parts that upload already holds
and sends only the missing ones; a held part counts only if its size and CRC-32 (or, where the
store lists no checksum, its ETag = MD5) equal the local bytes'. A transient failure leaves the
upload open for that; a permanent one aborts it. Uploads of the key left by anything else are
aborted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.handlers import add_expect_header, convert_body_to_file_like_object
from isal.isal_zlib import crc32

from shared.events.transcodes import SealedFile
from shared.events.uploads import RemoteFile

from .confirm import Readback, verify_mode
from .errors import PermanentUploadError, TransientUploadError, UploadError
from .partbody import PartBody
from .resume import ResumeSlot
from .source import Buffers, Source, as_source

log = logging.getLogger(__name__)
T = TypeVar("T")
STATE_KIND = "s3-multipart"
CHECKSUMS = ("crc32", "md5")
# A send buffer that holds half a part (Linux doubles the value, capped by net.core.wmem_max):
# each part goes to the kernel in a few large sends instead of many small ones while autotuning
# grows the buffer from 16 KiB, with fewer event-loop wake-ups (~0.05-0.08 s of CPU per GiB).
SEND_BUFFER = 4 * 1024 * 1024

PERMANENT_CODES = {
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidToken",
    "ExpiredToken",
    "NoSuchBucket",
    "SignatureDoesNotMatch",
    "InvalidArgument",
    "EntityTooSmall",
    "EntityTooLarge",
    "MethodNotAllowed",
    "NotImplemented",
    "InvalidRequest",
    "PermanentRedirect",
    "Redirect",
}
TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",  # corrupted in transit: send again
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "NoSuchUpload",  # the multipart upload was aborted under us: start over
    "OperationAborted",
}


def b64_crc32(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def composite_crc32(part_crcs: list[int]) -> str:
    """What S3 stores for a multipart CRC-32 upload: CRC-32 of the raw part checksums, -N."""
    raw = b"".join(c.to_bytes(4, "big") for c in part_crcs)
    return f"{b64_crc32(crc32(raw))}-{len(part_crcs)}"


def md5_hex(data: bytes | memoryview) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _md5(data: bytes | memoryview) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


_session: AioSession | None = None


def shared_session() -> AioSession:
    """One botocore session for every client: a new one parses the S3 service model again
    (~70 ms of CPU per upload job). Clients get their own credentials, config and event hooks."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


def upload_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket factory for our connections: the default one, with SEND_BUFFER."""
    family, type_, proto = addr_info[:3]
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    return sock


class SharedTLSSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore builds a new verifying SSL context, loading the whole CA bundle (~20 ms of
    CPU), for every client, even one for an http:// endpoint. Without a client certificate or a
    proxy (whose setup alters the context) ours are all alike: one per verify setting is built
    and shared (an SSLContext may serve any number of connectors)."""

    _contexts: ClassVar[dict[object, ssl.SSLContext]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()  # built in a worker thread

    def _build_ssl_contexts(self, proxy_url: str | None) -> tuple[Any, Any]:
        if proxy_url or self._cert_file:
            return super()._build_ssl_contexts(proxy_url)  # type: ignore[no-any-return]
        with self._lock:
            context = self._contexts.get(self._verify)
            if context is None:
                context = self._build_verify_context()
                self._contexts[self._verify] = context
        return context, None


def composite_md5(part_md5s: list[bytes]) -> str:
    """An S3 multipart ETag: MD5 of the concatenated raw part MD5s (hex), ``-N``."""
    return f"{md5_hex(b''.join(part_md5s))}-{len(part_md5s)}"


def same_checksum(stored: str, expected: str) -> bool:
    """Compare a stored checksum to ours; a provider may omit the ``-N`` part count."""
    exp_value, _, exp_parts = expected.partition("-")
    got_value, _, got_parts = stored.partition("-")
    return got_value == exp_value and (not got_parts or got_parts == exp_parts)


def classify(exc: BaseException, action: str, name: str) -> UploadError:
    """Our own sentence for an SDK failure (its text can echo request details: never reused)."""
    if isinstance(exc, UploadError):
        return exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", "") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        what = f"the S3 destination answered {code or status} to {action} {name}"
        if code in TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return TransientUploadError(f"{what}; it will be retried")
        if code == "NoSuchBucket":
            return PermanentUploadError(
                f"{what}: the bucket does not exist; create it or fix the destination"
            )
        if code in PERMANENT_CODES or status in (400, 401, 403, 404, 405, 411, 412, 413):
            return PermanentUploadError(
                f"{what}; check the destination's bucket, region and credentials"
            )
        return PermanentUploadError(f"{what}; check the destination")
    if isinstance(exc, NoCredentialsError | ParamValidationError):
        return PermanentUploadError(
            f"the S3 destination's settings were refused by the client while trying to {action} "
            f"{name} ({type(exc).__name__}); fix the destination"
        )
    if isinstance(
        exc,
        BotoConnectionError
        | HTTPClientError
        | ReadTimeoutError
        | asyncio.TimeoutError
        | aiohttp.ClientError
        | OSError,
    ):
        return TransientUploadError(
            f"could not reach the S3 destination to {action} {name} ({type(exc).__name__}); "
            "it will be retried"
        )
    if isinstance(exc, BotoCoreError):
        return TransientUploadError(
            f"the S3 client failed to {action} {name} ({type(exc).__name__}); it will be retried"
        )
    return TransientUploadError(
        f"unexpected {type(exc).__name__} while trying to {action} {name}; it will be retried"
    )


class S3Backend:
    def __init__(
        self,
        config: dict[str, Any],
        secret: dict[str, Any],
        *,
        part_size: int,
        part_concurrency: int = 1,
    ) -> None:
        self.bucket = str(config["bucket"])
        self.part_size = part_size
        self.part_concurrency = max(1, part_concurrency)
        self.verify = verify_mode(config) or "checksum"
        self.checksum = str(config.get("checksum") or "crc32")
        if self.checksum not in CHECKSUMS:
            raise PermanentUploadError(
                "the S3 destination's checksum must be crc32 or md5; fix the destination"
            )
        self._checksum_mode = {} if self.checksum == "md5" else {"ChecksumMode": "ENABLED"}
        endpoint = config.get("endpoint_url") or None
        aio_config = AioConfig(
            region_name=config.get("region") or "us-east-1",
            s3={
                "addressing_style": "path" if config.get("path_style") else "auto",
                # Every part carries our CRC-32 (x-amz-checksum-crc32, a signed header) and the
                # object is confirmed afterwards: a SigV4 SHA-256 of each body on top (what
                # botocore does over http) would hash every byte twice for nothing.
                "payload_signing_enabled": False,
            },
            retries={"max_attempts": 2, "mode": "standard"},  # our backoff does the rest
            max_pool_connections=max(10, part_concurrency + 2),
            connect_timeout=10,
            read_timeout=60,
            http_session_cls=SharedTLSSession,
            connector_args={"socket_factory": upload_socket},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._cm = shared_session().create_client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=secret.get("access_key_id"),
            aws_secret_access_key=secret.get("secret_access_key"),
            aws_session_token=secret.get("session_token") or None,
            config=aio_config,
        )
        self._client: Any = None

    async def _c(self) -> Any:
        if self._client is None:
            client = await self._cm.__aenter__()
            # Bodies are PartBody (a seekable file-like that aiohttp writes without copying):
            # botocore must neither wrap them in a BytesIO (a copy) nor add "Expect:
            # 100-continue" to them (a round trip per part, and servers that never answer 100).
            for op in ("UploadPart", "PutObject"):
                client.meta.events.unregister(
                    f"before-parameter-build.s3.{op}", convert_body_to_file_like_object
                )
            client.meta.events.unregister("before-call.s3", add_expect_header)
            self._client = client
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
            with contextlib.suppress(Exception):
                await self._cm.__aexit__(None, None, None)

    async def _call(self, action: str, name: str, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except Exception as exc:
            raise classify(exc, action, name) from None

    async def upload(
        self, source: Source | Path, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> RemoteFile:
        local = as_source(source, sealed)
        await local.check()
        client = await self._c()
        if sealed.size < self.part_size:
            await self._abort_stale(client, key, sealed.name, keep=None)
            checksum = await self._put(client, local, key, sealed)
        else:
            checksum = await self._multipart(client, local, key, sealed, slot)
        stored = await self._confirm(client, key, sealed, checksum)
        await slot.clear()
        return RemoteFile(
            name=sealed.name,
            uri=f"s3://{self.bucket}/{key}",
            size=sealed.size,
            sha256=sealed.sha256,
            checksum_algorithm="MD5" if self.checksum == "md5" else "CRC32",
            checksum=stored,
        )

    async def delete(self, key: str) -> None:
        """Delete the object at ``key``; S3 answers a missing key with success (204) as well."""
        client = await self._c()
        try:
            await client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = str((exc.response.get("Error") or {}).get("Code", ""))
            if code == "NoSuchKey":  # some S3-compatible stores say so instead of 204
                return
            raise classify(exc, "delete", _leaf(key)) from None
        except Exception as exc:
            raise classify(exc, "delete", _leaf(key)) from None

    async def _abort_stale(self, client: Any, key: str, name: str, keep: str | None) -> None:
        """Multipart uploads of this key that are not ours to resume: abort them (best effort)."""
        try:
            listing = await client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for up in listing.get("Uploads", []) or []:
                if up.get("Key") == key and up.get("UploadId") != keep:
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=up["UploadId"]
                    )
                    log.info("aborted a stale multipart upload", extra={"file": name})
        except Exception as exc:
            err = classify(exc, "list pending uploads of", name)
            if isinstance(err, TransientUploadError):
                raise err from None  # unreachable or throttled: the upload would fail the same
            # Refused (no ListBucketMultipartUploads permission, missing bucket...): the upload
            # that follows reports any real problem itself.
            log.debug("could not list pending multipart uploads", extra={"reason": str(err)})

    async def _held_parts(
        self, client: Any, key: str, upload_id: str, name: str
    ) -> dict[int, dict[str, Any]] | None:
        """The parts an open multipart upload holds, or None if the upload is gone."""
        held: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            try:
                page = await client.list_parts(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
            except ClientError as exc:
                code = str((exc.response.get("Error") or {}).get("Code", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if code == "NoSuchUpload" or status == 404:
                    return None
                raise classify(exc, "list the uploaded parts of", name) from None
            except Exception as exc:
                raise classify(exc, "list the uploaded parts of", name) from None
            for part in page.get("Parts", []) or []:
                held[int(part["PartNumber"])] = part
            if not page.get("IsTruncated"):
                return held
            marker = int(page.get("NextPartNumberMarker") or 0)
            if not marker:
                return held

    async def _put(self, client: Any, local: Source, key: str, sealed: SealedFile) -> str:
        # Smaller than one part, so one chunk: hashed and checksummed in the same read.
        reader = local.reader(self.part_size)
        fn: Any = _md5 if self.checksum == "md5" else crc32
        read = [item async for item in reader.chunks_with(fn)]
        reader.verify()  # before a single byte is sent (a file that grew past a part fails here)
        body, digest = read[0] if read else (b"", fn(b""))
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": PartBody(memoryview(body)),
            "ContentType": sealed.content_type,
            "Metadata": {"sha256": sealed.sha256},
        }
        checksum: str
        if self.checksum == "md5":
            args["ContentMD5"] = base64.b64encode(digest).decode()
            checksum = digest.hex()
        else:
            checksum = b64_crc32(digest)
            args.update(ChecksumAlgorithm="CRC32", ChecksumCRC32=checksum)
        await self._call("upload", sealed.name, client.put_object(**args))
        return checksum

    async def _multipart(
        self, client: Any, local: Source, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> str:
        part_size = self.part_size
        upload_id: str | None = None
        held: dict[int, dict[str, Any]] = {}
        state = await slot.load(STATE_KIND)
        if (
            state
            and state.get("bucket") == self.bucket
            and state.get("key") == key
            and state.get("checksum", "crc32") == self.checksum
        ):
            found = await self._held_parts(client, key, str(state["upload_id"]), sealed.name)
            if found is not None:
                upload_id, held = str(state["upload_id"]), found
                part_size = int(state["part_size"])
        await self._abort_stale(client, key, sealed.name, keep=upload_id)
        md5_mode = self.checksum == "md5"
        if upload_id is None:
            extra = {} if md5_mode else {"ChecksumAlgorithm": "CRC32"}
            created = await self._call(
                "start the multipart upload of",
                sealed.name,
                client.create_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    ContentType=sealed.content_type,
                    Metadata={"sha256": sealed.sha256},
                    **extra,
                ),
            )
            upload_id = str(created["UploadId"])
            await slot.save(
                STATE_KIND,
                {
                    "bucket": self.bucket,
                    "key": key,
                    "upload_id": upload_id,
                    "part_size": part_size,
                    "checksum": self.checksum,
                },
            )
        elif held:
            log.info(
                "resuming a multipart upload",
                extra={"file": sealed.name, "parts_held": len(held)},
            )
        completed = False
        keep_open = True
        try:
            reader = local.reader(part_size)
            parts: list[dict[str, Any]] = []
            sums: list[Any] = []  # each part's CRC-32 (int) or MD5 (raw bytes)
            skipped = 0
            # Up to part_concurrency parts in flight and one being read: their buffers are the
            # upload's memory, reused part after part.
            buffers = Buffers(part_size, self.part_concurrency + 1)
            sending: set[asyncio.Task[None]] = set()
            try:
                fn: Any = _md5 if md5_mode else crc32
                async for chunk, digest in reader.chunks_into(buffers, fn):
                    number = len(parts) + 1
                    part: dict[str, Any] = {"ETag": "", "PartNumber": number}
                    if md5_mode:
                        same = _same_md5_part(held.get(number), len(chunk), digest.hex())
                    else:
                        part["ChecksumCRC32"] = b64_crc32(digest)
                        prior = held.get(number)
                        same = prior is not None and await _same_part(
                            prior, chunk, part["ChecksumCRC32"]
                        )
                    parts.append(part)
                    sums.append(digest)
                    if same:
                        part["ETag"] = held[number]["ETag"]
                        skipped += len(chunk)
                        buffers.give(chunk.obj)
                        continue
                    while len(sending) >= self.part_concurrency:
                        done, sending = await asyncio.wait(
                            sending, return_when=asyncio.FIRST_COMPLETED
                        )
                        for task in done:
                            task.result()  # the first failure stops the upload
                    md5 = digest if md5_mode else None
                    sending.add(
                        asyncio.create_task(
                            self._send_part(
                                client, key, upload_id, part, chunk, sealed.name, md5, buffers
                            )
                        )
                    )
                    del chunk
                for pending in asyncio.as_completed(sending):
                    await pending
            finally:
                for task in sending:
                    task.cancel()
                if sending:
                    await asyncio.gather(*sending, return_exceptions=True)
            try:
                reader.verify()  # the whole file, before the object becomes visible
            except PermanentUploadError:
                keep_open = False
                raise
            if skipped:
                log.info(
                    "multipart upload resumed",
                    extra={"file": sealed.name, "bytes_skipped": skipped},
                )
            await self._call(
                "complete the multipart upload of",
                sealed.name,
                client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
            )
            completed = True
            return composite_md5(sums) if md5_mode else composite_crc32(sums)
        except PermanentUploadError:
            keep_open = False
            raise
        finally:
            if not completed and not keep_open:
                await slot.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        client.abort_multipart_upload(
                            Bucket=self.bucket, Key=key, UploadId=upload_id
                        )
                    )

    async def _send_part(
        self,
        client: Any,
        key: str,
        upload_id: str,
        part: dict[str, Any],
        chunk: memoryview,
        name: str,
        md5: bytes | None,
        buffers: Buffers,
    ) -> None:
        body = PartBody(chunk)
        try:
            await self._send_part_body(client, key, upload_id, part, body, name, md5)
        finally:
            body.retire()  # no slice of the buffer goes out once it is reused
            buffers.give(chunk.obj)

    async def _send_part_body(
        self,
        client: Any,
        key: str,
        upload_id: str,
        part: dict[str, Any],
        body: PartBody,
        name: str,
        md5: bytes | None,
    ) -> None:
        number = part["PartNumber"]
        if md5 is not None:
            resp = await self._call(
                f"upload part {number} of",
                name,
                client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentMD5=base64.b64encode(md5).decode(),
                ),
            )
            etag = str(resp["ETag"])
            # A non-MD5 ETag (SSE-KMS...) is refused at confirmation unless verify=readback.
            if len(etag.strip('"')) == 32 and etag.strip('"') != md5.hex():
                raise TransientUploadError(
                    f"the S3 destination stored part {number} of {name} with another MD5 than "
                    "was sent; it will be retried"
                )
            part["ETag"] = etag
            return
        crc_b64 = part["ChecksumCRC32"]
        resp = await self._call(
            f"upload part {number} of",
            name,
            client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="CRC32",
                ChecksumCRC32=crc_b64,
            ),
        )
        echoed = resp.get("ChecksumCRC32")
        if echoed and echoed != crc_b64:
            raise TransientUploadError(
                f"the S3 destination stored part {number} of {name} with another "
                "CRC-32 than was sent; it will be retried"
            )
        part["ETag"] = str(resp["ETag"])

    async def _confirm(self, client: Any, key: str, sealed: SealedFile, checksum: str) -> str:
        head = await self._call(
            "confirm",
            sealed.name,
            # checksum=md5: no x-amz-checksum-mode either (the store may refuse any such header)
            client.head_object(Bucket=self.bucket, Key=key, **self._checksum_mode),
        )
        if int(head.get("ContentLength", -1)) != sealed.size:
            raise TransientUploadError(
                f"the S3 destination reports {sealed.name} at another size than was sent; "
                "it will be sent again"
            )
        if (head.get("Metadata") or {}).get("sha256") != sealed.sha256:
            raise TransientUploadError(
                f"the S3 destination lost the sha256 metadata of {sealed.name}; "
                "it will be sent again"
            )
        if self.verify == "readback":
            await self._readback(client, key, sealed)
            if self.checksum == "md5":
                return checksum
            return str(head.get("ChecksumCRC32") or checksum)
        if self.checksum == "md5":
            etag = str(head.get("ETag") or "").strip('"')
            value, _, count = etag.partition("-")
            if len(value) != 32 or (count and not count.isdigit()):
                raise PermanentUploadError(
                    f"the S3 destination's ETag for {sealed.name} is not an MD5, so the upload "
                    "cannot be confirmed; set the destination's verify to readback"
                )
            if etag != checksum:
                raise TransientUploadError(
                    f"the S3 destination stored {sealed.name} with another MD5 than was sent; "
                    "it will be sent again"
                )
            return checksum
        stored = head.get("ChecksumCRC32")
        if not stored:
            raise PermanentUploadError(
                f"the S3 destination did not report a CRC-32 for {sealed.name}, so the upload "
                "cannot be confirmed; set the destination's verify to readback"
            )
        if not same_checksum(str(stored), checksum):
            raise TransientUploadError(
                f"the S3 destination stored {sealed.name} with another CRC-32 than was sent; "
                "it will be sent again"
            )
        return checksum

    async def _readback(self, client: Any, key: str, sealed: SealedFile) -> None:
        resp = await self._call(
            "download", sealed.name, client.get_object(Bucket=self.bucket, Key=key)
        )
        readback = Readback()
        try:
            async with resp["Body"] as stream:
                while chunk := await stream.read(1 << 20):
                    await readback.update(chunk)
        except Exception as exc:
            raise classify(exc, "download", sealed.name) from None
        readback.check(sealed, "the S3 destination")


def _leaf(key: str) -> str:
    """The file name at the end of a key (errors name the file, as uploads do)."""
    return key.rsplit("/", 1)[-1]


def _same_md5_part(prior: dict[str, Any] | None, size: int, md5: str) -> bool:
    """Does a part an open (MD5-mode) upload already holds equal these local bytes?"""
    if prior is None or int(prior.get("Size", -1)) != size:
        return False
    return bool(str(prior.get("ETag", "")).strip('"') == md5)


async def _same_part(prior: dict[str, Any], chunk: memoryview, crc_b64: str) -> bool:
    """Does a part an open upload already holds equal these local bytes?"""
    if int(prior.get("Size", -1)) != len(chunk):
        return False
    stored = prior.get("ChecksumCRC32")
    if stored:
        return bool(stored == crc_b64)
    etag = str(prior.get("ETag", "")).strip('"')
    if len(etag) != 32:  # not a plain MD5 (SSE-KMS, ...): cannot tell, send it again
        return False
    md5 = await asyncio.to_thread(lambda: hashlib.md5(chunk, usedforsecurity=False).hexdigest())
    return md5 == etag
