"""Azure Blob adapter: staged blocks, each with its own Content-MD5, then one block list.

- The file is cut in blocks of the uploader's part size; each block's MD5 (computed in the same
  pass as the SHA-256) goes with it as ``Content-MD5``, which Azure checks (a damaged block is
  refused with ``Md5Mismatch`` and sent again).
- A block's id carries its index and MD5, so a block staged by an earlier attempt (a retry, a
  re-send, a restart after kill -9) with the same id holds the same bytes: it is not sent again.
  Uncommitted blocks are the resume state; the block size is kept in the resume slot so the cut
  stays the same.
- The SHA-256 must match the sealed one before the block list is committed (with
  ``metadata.sha256`` and the content type); afterwards the blob's size, metadata and committed
  block list must be exactly ours. ``verify=readback`` also downloads and re-hashes it.
- The SDK retries at most once, after half a second (its storage retry policy would wait 15 s,
  then 45 s..., and Azurite answers some requests with 500s that it would retry for minutes); our
  own backoff decides the rest. The SDK's request logging is kept to warnings.

The checksum reported in the event is ``MD5`` of the concatenated raw block MD5s, ``-N`` blocks
(Azure keeps no whole-blob MD5 for a block blob).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient, LinearRetry

from shared.events.transcodes import SealedFile
from shared.events.uploads import RemoteFile

from .confirm import Readback, verify_mode
from .errors import PermanentUploadError, TransientUploadError, UploadError
from .resume import ResumeSlot
from .source import Source, as_source

log = logging.getLogger(__name__)
# The SDK logs every request and response at INFO (URLs with container and key names): keep it to
# warnings, whatever the service's own log level.
logging.getLogger("azure").setLevel(logging.WARNING)

STATE_KIND = "azure-blocks"
MAX_BLOCK = 4000 * 1024 * 1024
TRANSIENT_CODES = {"Md5Mismatch", "OperationTimedOut", "ServerBusy", "InternalError"}


def sdk_options() -> dict[str, Any]:
    # The storage SDK's own retry policy waits 15 s, then 45 s...: one quick retry at most; our
    # backoff (plan.backoff) decides the rest.
    retry = LinearRetry(backoff=0.5, random_jitter_range=0.25, retry_total=1)  # type: ignore[arg-type]
    return {"retry_policy": retry, "connection_timeout": 10, "read_timeout": 120}


def block_id(index: int, md5: bytes) -> str:
    """Same length for every block (Azure requires it); the MD5 ties the id to the bytes."""
    return base64.b64encode(f"{index:06d}-{md5.hex()}".encode()).decode()


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _error_code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")  # a StorageErrorCode enum or a str


def classify(exc: BaseException, action: str, name: str) -> UploadError:
    """Our own sentence for an SDK failure (its text can echo request details: never reused)."""
    if isinstance(exc, UploadError):
        return exc
    if isinstance(exc, HttpResponseError) and exc.status_code:
        status = int(exc.status_code)
        code = _error_code(exc)
        what = f"the Azure destination answered {code or status} to {action} {name}"
        if code == "Md5Mismatch":
            return TransientUploadError(
                f"{what}: the bytes it received do not match their MD5 (damaged in transit); "
                "they will be sent again"
            )
        if code in TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return TransientUploadError(f"{what}; it will be retried")
        if code == "ContainerNotFound":
            return PermanentUploadError(
                f"{what}: the container does not exist; create it or fix the destination"
            )
        if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
            return PermanentUploadError(
                f"{what}: access denied; check the destination's key, SAS token or connection "
                "string"
            )
        return PermanentUploadError(f"{what}; check the destination")
    if isinstance(
        exc,
        ServiceRequestError
        | ServiceResponseError
        | aiohttp.ClientError
        | asyncio.TimeoutError
        | OSError,
    ):
        return TransientUploadError(
            f"could not reach the Azure destination to {action} {name} ({type(exc).__name__}); "
            "it will be retried"
        )
    if isinstance(exc, AzureError):
        return TransientUploadError(
            f"the Azure client failed to {action} {name} ({type(exc).__name__}); it will be retried"
        )
    return TransientUploadError(
        f"unexpected {type(exc).__name__} while trying to {action} {name}; it will be retried"
    )


def account_name(url: str) -> str:
    """``https://NAME.blob.core.windows.net`` -> NAME; emulator style ``http://host:port/NAME``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    return parts.path.strip("/").split("/", 1)[0]


def make_service(config: dict[str, Any], secret: dict[str, Any]) -> BlobServiceClient:
    conn = secret.get("connection_string")
    url = config.get("account_url")
    try:
        if conn:
            return BlobServiceClient.from_connection_string(str(conn), **sdk_options())
        if url and secret.get("account_key"):
            name = account_name(str(url))
            if not name:
                raise ValueError("no account name")
            cred = AzureNamedKeyCredential(name, str(secret["account_key"]))
            return BlobServiceClient(str(url), credential=cred, **sdk_options())
        if url and secret.get("sas_token"):
            sas = AzureSasCredential(str(secret["sas_token"]).lstrip("?"))
            return BlobServiceClient(str(url), credential=sas, **sdk_options())
    except ValueError:
        raise PermanentUploadError(
            "the Azure destination's connection_string or account_url is not valid; "
            "fix the destination"
        ) from None
    raise PermanentUploadError(
        "the Azure destination needs connection_string, or account_url with account_key or "
        "sas_token; fix the destination"
    )


class AzureBackend:
    def __init__(self, config: dict[str, Any], secret: dict[str, Any], *, part_size: int) -> None:
        self.container_name = str(config["container"])
        self.verify = verify_mode(config) or "checksum"
        self.block_size = min(part_size, MAX_BLOCK)
        self._service = make_service(config, secret)
        self._container: ContainerClient = self._service.get_container_client(self.container_name)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._service.close()

    async def upload(
        self, source: Source | Path, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> RemoteFile:
        local = as_source(source, sealed)
        await local.check()
        blob = self._container.get_blob_client(key)
        name = sealed.name
        state = await slot.load(STATE_KIND)
        block_size = self.block_size
        if state and state.get("container") == self.container_name and state.get("key") == key:
            block_size = int(state["block_size"])
        else:
            await slot.save(
                STATE_KIND,
                {"container": self.container_name, "key": key, "block_size": block_size},
            )
        staged = await self._uncommitted(blob, name)
        reader = local.reader(block_size)
        blocks: list[tuple[str, int]] = []
        md5s: list[bytes] = []
        skipped = 0
        async for data, md5 in reader.chunks_with(_md5):
            bid = block_id(len(blocks), md5)
            if staged.get(bid) == len(data):
                skipped += len(data)
            else:
                await self._call(
                    f"upload block {len(blocks) + 1} of",
                    name,
                    blob.stage_block(
                        bid,
                        data,
                        length=len(data),
                        headers={"Content-MD5": base64.b64encode(md5).decode()},
                    ),
                )
            blocks.append((bid, len(data)))
            md5s.append(md5)
        reader.verify()  # the whole file, before the blob becomes visible
        if skipped:
            log.info("block upload resumed", extra={"file": name, "bytes_skipped": skipped})
        await self._call(
            "commit the blocks of",
            name,
            blob.commit_block_list(
                [BlobBlock(block_id=b) for b, _ in blocks],
                metadata={"sha256": sealed.sha256},
                content_settings=ContentSettings(content_type=sealed.content_type),
            ),
        )
        await self._confirm(blob, sealed, blocks)
        if self.verify == "readback":
            await self._readback(blob, sealed)
        await slot.clear()
        composite = hashlib.md5(b"".join(md5s), usedforsecurity=False).digest()
        return RemoteFile(
            name=name,
            uri=f"{self._container.url.rstrip('/')}/{key}",
            size=sealed.size,
            sha256=sealed.sha256,
            checksum_algorithm="MD5",
            checksum=f"{base64.b64encode(composite).decode()}-{len(blocks)}",
        )

    async def delete(self, key: str) -> None:
        """Delete the blob at ``key`` (with any snapshots); ``BlobNotFound`` means it is gone."""
        blob = self._container.get_blob_client(key)
        name = key.rsplit("/", 1)[-1]
        try:
            await blob.delete_blob(delete_snapshots="include")
        except HttpResponseError as exc:
            if exc.status_code == 404 and _error_code(exc) == "BlobNotFound":
                return
            raise classify(exc, "delete", name) from None
        except Exception as exc:
            raise classify(exc, "delete", name) from None

    async def _call(self, action: str, name: str, aw: Any) -> Any:
        try:
            return await aw
        except Exception as exc:
            raise classify(exc, action, name) from None

    async def _uncommitted(self, blob: Any, name: str) -> dict[str, int]:
        """Blocks staged by earlier attempts and not committed: id -> size."""
        try:
            _, uncommitted = await blob.get_block_list("uncommitted")
        except HttpResponseError as exc:
            if exc.status_code == 404 and _error_code(exc) == "BlobNotFound":
                return {}
            raise classify(exc, "list the staged blocks of", name) from None
        except Exception as exc:
            raise classify(exc, "list the staged blocks of", name) from None
        return {str(b.id): int(b.size) for b in uncommitted or []}

    async def _confirm(self, blob: Any, sealed: SealedFile, blocks: list[tuple[str, int]]) -> None:
        props = await self._call("confirm", sealed.name, blob.get_blob_properties())
        if int(props.size) != sealed.size:
            raise TransientUploadError(
                f"the Azure destination reports {sealed.name} at another size than was sent; "
                "it will be sent again"
            )
        if (props.metadata or {}).get("sha256") != sealed.sha256:
            raise TransientUploadError(
                f"the Azure destination lost the sha256 metadata of {sealed.name}; "
                "it will be sent again"
            )
        committed, _ = await self._call(
            "confirm the blocks of", sealed.name, blob.get_block_list("committed")
        )
        if [(str(b.id), int(b.size)) for b in committed or []] != blocks:
            raise TransientUploadError(
                f"the Azure destination committed other blocks for {sealed.name} than were sent; "
                "it will be sent again"
            )

    async def _readback(self, blob: Any, sealed: SealedFile) -> None:
        readback = Readback()
        try:
            downloader = await blob.download_blob()
            async for chunk in downloader.chunks():
                await readback.update(chunk)
        except Exception as exc:
            raise classify(exc, "download", sealed.name) from None
        readback.check(sealed, "the Azure destination")
