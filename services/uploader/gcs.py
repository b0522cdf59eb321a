"""Google Cloud Storage adapter: chunked resumable upload with our own CRC32C, confirmed.

- One resumable session per file (JSON API, ``uploadType=resumable``), sent in chunks of the
  uploader's part size rounded down to 256 KiB (GCS's unit); at most one chunk in memory.
- CRC32C (google-crc32c) and SHA-256 are computed in the same pass that reads the chunks. The final
  chunk carries ``X-Goog-Hash: crc32c=...`` (GCS rejects the object if it differs); the object
  resource the server answers with must report our size, our CRC32C and ``metadata.sha256``, and a
  metadata read afterwards must say the same. No JSON or no CRC32C in an answer is a failure,
  never a success (gcloud-aio-storage's own ``upload()`` can return None on a rejected checksum:
  it is not used for the data path).
- ``verify=readback`` downloads the object and re-hashes it as well.
- Resume: the session URI is kept in the recording's resume state; a later attempt asks the
  session how much it holds (``Content-Range: bytes */SIZE``) and sends only the rest. A session
  that is gone (404/410) starts a new one.

Why not ``Storage.upload()``: it sends a "resumable" upload as one PUT of the whole stream, cannot
resume a session after a restart, and retries with ``Content-Range: bytes */*``. gcloud-aio-storage
is used for the token, the metadata read and the readback download; the chunked protocol is here.

``endpoint`` points the adapter at an emulator (fake-gcs-server, gcp-storage-emulator) without
touching ``STORAGE_EMULATOR_HOST``: other jobs in this process keep their own endpoints.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import google_crc32c
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage

from shared.events.transcodes import SealedFile
from shared.events.uploads import RemoteFile

from .confirm import Readback, verify_mode
from .errors import PermanentUploadError, TransientUploadError, UploadError
from .resume import ResumeSlot
from .source import Source, as_source

log = logging.getLogger(__name__)

GCS_UNIT = 256 * 1024
DEFAULT_ROOT = "https://storage.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
STATE_KIND = "gcs-resumable"
RANGE_RE = re.compile(r"bytes=0-(\d+)")
CHECKSUM_WORDS = ("crc32c", "checksum", "hash", "md5")


def b64_crc32c(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


def classify_status(status: int, text: str, action: str, name: str) -> UploadError:
    """Our own sentence for an HTTP answer (the body can echo request details: never reused)."""
    what = f"the GCS destination answered {status} to {action} {name}"
    if status in (408, 429) or status >= 500:
        return TransientUploadError(f"{what}; it will be retried")
    if status == 400 and any(w in text.lower() for w in CHECKSUM_WORDS):
        return TransientUploadError(
            f"{what}: the bytes it received do not match their checksum (damaged in transit); "
            "it will be sent again"
        )
    if status in (401, 403):
        return PermanentUploadError(
            f"{what}: access denied; check the service account and its bucket permissions"
        )
    if status == 404:
        return PermanentUploadError(
            f"{what}: the bucket does not exist; create it or fix the destination"
        )
    return PermanentUploadError(f"{what}; check the destination")


def unreachable(exc: BaseException, action: str, name: str) -> TransientUploadError:
    return TransientUploadError(
        f"could not reach the GCS destination to {action} {name} ({type(exc).__name__}); "
        "it will be retried"
    )


class SessionGone(Exception):
    """The resumable session expired or was cancelled: start a new one."""


class GCSBackend:
    def __init__(self, config: dict[str, Any], secret: dict[str, Any], *, part_size: int) -> None:
        self.bucket = str(config["bucket"])
        self.verify = verify_mode(config) or "checksum"
        self.chunk = max(GCS_UNIT, part_size - part_size % GCS_UNIT)
        self.root = str(config.get("endpoint") or DEFAULT_ROOT).rstrip("/")
        self._service_json = secret.get("service_account_json") or None
        if self._service_json is None and not config.get("endpoint"):
            raise PermanentUploadError(
                "the GCS destination has no service_account_json; add the service account's "
                "JSON key to the destination"
            )
        self._session: aiohttp.ClientSession | None = None
        self._token: Token | None = None
        self._storage: Storage | None = None

    # -- plumbing -------------------------------------------------------------------------------
    def _open(self) -> tuple[aiohttp.ClientSession, Storage]:
        if self._session is None or self._storage is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
            self._session = aiohttp.ClientSession(timeout=timeout)
            if self._service_json is not None:
                try:
                    self._token = Token(
                        service_file=io.StringIO(str(self._service_json)),
                        session=self._session,  # type: ignore[arg-type]
                        scopes=SCOPES,
                    )
                except Exception:
                    raise PermanentUploadError(
                        "the GCS destination's service_account_json is not a usable service "
                        "account key; fix the destination"
                    ) from None
            self._storage = Storage(
                session=self._session,  # type: ignore[arg-type]
                token=self._token,
                api_root=self.root,
                api_is_dev=self._token is None,
            )
        return self._session, self._storage

    async def close(self) -> None:
        session, self._session, self._storage, self._token = self._session, None, None, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()

    async def _auth(self, name: str) -> dict[str, str]:
        if self._token is None:
            return {}
        try:
            return {"Authorization": f"Bearer {await self._token.get()}"}
        except aiohttp.ClientResponseError as exc:
            if exc.status in (400, 401, 403):
                raise PermanentUploadError(
                    "Google refused the destination's service account; check the key and that "
                    "it is not disabled"
                ) from None
            raise unreachable(exc, "authenticate for", name) from None
        except Exception as exc:
            raise unreachable(exc, "authenticate for", name) from None

    # -- upload ---------------------------------------------------------------------------------
    async def upload(
        self, source: Source | Path, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> RemoteFile:
        local = as_source(source, sealed)
        await local.check()
        session, _ = self._open()
        sent: tuple[dict[str, Any] | None, str] | None = None
        for _ in range(2):  # a second time only if the kept session turned out to be gone
            uri, offset = await self._session_for(session, key, sealed, slot)
            try:
                sent = await self._send(session, uri, offset, local, sealed)
                break
            except SessionGone:
                await slot.clear()
                log.info("resumable session gone; starting a new one", extra={"file": sealed.name})
        if sent is None:
            raise TransientUploadError(
                f"the GCS destination dropped the upload session of {sealed.name} twice; "
                "it will be retried"
            )
        resource, crc = sent
        try:
            await self._confirm(key, sealed, resource, crc)
            if self.verify == "readback":
                await self._readback(key, sealed)
        except TransientUploadError:
            await slot.clear()  # the session made a bad object: the next attempt starts a new one
            raise
        await slot.clear()
        return RemoteFile(
            name=sealed.name,
            uri=f"gs://{self.bucket}/{key}",
            size=sealed.size,
            sha256=sealed.sha256,
            checksum_algorithm="CRC32C",
            checksum=crc,
        )

    async def _session_for(
        self, session: aiohttp.ClientSession, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> tuple[str, int]:
        """A session URI and how many bytes it already holds (-1: already complete)."""
        state = await slot.load(STATE_KIND)
        if state and state.get("bucket") == self.bucket and state.get("key") == key:
            uri = str(state["uri"])
            try:
                held = await self._held(session, uri, sealed)
            except SessionGone:
                await slot.clear()
            else:
                if held:
                    log.info(
                        "resuming a GCS upload session",
                        extra={"file": sealed.name, "bytes_held": held},
                    )
                return uri, held
        uri = await self._initiate(session, key, sealed)
        await slot.save(STATE_KIND, {"bucket": self.bucket, "key": key, "uri": uri})
        return uri, 0

    async def _initiate(self, session: aiohttp.ClientSession, key: str, sealed: SealedFile) -> str:
        url = f"{self.root}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        headers = {
            **await self._auth(sealed.name),
            "X-Upload-Content-Type": sealed.content_type,
            "X-Upload-Content-Length": str(sealed.size),
        }
        body = {
            "name": key,
            "contentType": sealed.content_type,
            "metadata": {"sha256": sealed.sha256},
        }
        action = "start the upload of"
        try:
            async with session.post(
                url,
                params={"uploadType": "resumable", "name": key},
                json=body,
                headers=headers,
            ) as resp:
                text = await resp.text()
                if resp.status not in (200, 201):
                    raise classify_status(resp.status, text, action, sealed.name)
                location = resp.headers.get("Location")
        except UploadError:
            raise
        except Exception as exc:
            raise unreachable(exc, action, sealed.name) from None
        if not location:
            raise TransientUploadError(
                f"the GCS destination opened no upload session for {sealed.name}; "
                "it will be retried"
            )
        return location

    async def _held(self, session: aiohttp.ClientSession, uri: str, sealed: SealedFile) -> int:
        """Ask a session how much it holds (-1 when it already made the object)."""
        action = "report the progress of"
        try:
            async with session.put(
                uri,
                headers={
                    **await self._auth(sealed.name),
                    "Content-Range": f"bytes */{sealed.size}",
                    "Content-Length": "0",
                },
            ) as resp:
                text = await resp.text()
                if resp.status == 308:
                    return _held_from(resp.headers.get("Range"))
                if resp.status in (200, 201):
                    return -1
                if resp.status in (404, 410):
                    raise SessionGone
                raise classify_status(resp.status, text, action, sealed.name)
        except (UploadError, SessionGone):
            raise
        except Exception as exc:
            raise unreachable(exc, action, sealed.name) from None

    async def _send(
        self,
        session: aiohttp.ClientSession,
        uri: str,
        offset: int,
        local: Source,
        sealed: SealedFile,
    ) -> tuple[dict[str, Any] | None, str]:
        """Send what the session lacks and finish it: (the object resource GCS answered with,
        our CRC32C). The whole file is read (SHA-256 and CRC32C cover every byte); bytes the
        session already holds are hashed, not sent. ``offset`` -1: the session is complete."""
        reader = local.reader(self.chunk)
        running = [0]

        def crc_so_far(data: bytes) -> int:
            running[0] = google_crc32c.extend(running[0], data)
            return running[0]

        crc = 0
        pos = 0
        resource: dict[str, Any] | None = None
        async for data, crc in reader.chunks_with(crc_so_far):
            start, pos = pos, pos + len(data)
            last = pos >= sealed.size
            if last:
                reader.verify()  # a changed backup never finishes the object
            if offset < 0 or pos <= offset:
                continue  # the session holds these bytes already
            piece = data if offset <= start else data[offset - start :]
            resource = await self._put(
                session, uri, piece, pos - len(piece), sealed, b64_crc32c(crc) if last else None
            )
        reader.verify()
        if sealed.size == 0 and offset == 0:
            resource = await self._put(session, uri, b"", 0, sealed, b64_crc32c(crc))
        return resource, b64_crc32c(crc)

    async def _put(
        self,
        session: aiohttp.ClientSession,
        uri: str,
        piece: bytes,
        start: int,
        sealed: SealedFile,
        final_crc: str | None,
    ) -> dict[str, Any] | None:
        """PUT one chunk (resending the tail the session did not keep, as GCS may keep less)."""
        action = "upload"
        for _ in range(4):
            end = start + len(piece) - 1
            headers = {
                **await self._auth(sealed.name),
                "Content-Range": f"bytes {start}-{end}/{sealed.size}"
                if len(piece)
                else f"bytes */{sealed.size}",
            }
            if final_crc is not None:
                headers["X-Goog-Hash"] = f"crc32c={final_crc}"
            try:
                async with session.put(uri, data=piece, headers=headers) as resp:
                    text = await resp.text()
                    status = resp.status
                    held = _held_from(resp.headers.get("Range")) if status == 308 else 0
                    payload = await _json(resp) if status in (200, 201) else None
            except Exception as exc:
                raise unreachable(exc, action, sealed.name) from None
            if status in (404, 410):
                raise SessionGone
            if status in (200, 201):
                if final_crc is None:
                    raise TransientUploadError(
                        f"the GCS destination finished {sealed.name} before all of it was sent; "
                        "it will be sent again"
                    )
                return payload
            if status != 308:
                raise classify_status(status, text, action, sealed.name)
            sent_to = start + len(piece)
            if held >= sent_to or held < start:
                if held > sent_to or held < start:
                    raise TransientUploadError(
                        f"the GCS destination reports an unexpected upload position for "
                        f"{sealed.name}; it will be sent again"
                    )
                if final_crc is None:
                    return None
                # A final chunk answered with "incomplete": the object was not made.
                raise TransientUploadError(
                    f"the GCS destination did not finish {sealed.name}; it will be sent again"
                )
            piece, start = piece[held - start :], held  # resend what it did not keep
        raise TransientUploadError(
            f"the GCS destination keeps refusing part of {sealed.name}; it will be retried"
        )

    # -- delete ---------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        """Delete the object at ``key`` (JSON API ``DELETE``); a 404 means it is not there."""
        session, _ = self._open()
        name = key.rsplit("/", 1)[-1]
        url = f"{self.root}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(key, safe='')}"
        try:
            async with session.delete(url, headers=await self._auth(name)) as resp:
                text = await resp.text()
                status = resp.status
        except UploadError:
            raise
        except Exception as exc:
            raise unreachable(exc, "delete", name) from None
        if status in (200, 204, 404):
            return
        raise classify_status(status, text, "delete", name)

    # -- confirmation ---------------------------------------------------------------------------
    async def _confirm(
        self, key: str, sealed: SealedFile, resource: dict[str, Any] | None, expected: str
    ) -> None:
        if resource is not None:  # the final answer (None: finished by an earlier attempt)
            self._check(resource, sealed, expected, "answered")
        _, storage = self._open()
        action = "confirm"
        try:
            meta = await storage.download_metadata(
                self.bucket, key, headers=await self._auth(sealed.name)
            )
        except aiohttp.ClientResponseError as exc:
            raise classify_status(exc.status, "", action, sealed.name) from None
        except UploadError:
            raise
        except Exception as exc:
            raise unreachable(exc, action, sealed.name) from None
        self._check(meta, sealed, expected, "stores")

    def _check(self, meta: Any, sealed: SealedFile, crc: str, verb: str) -> None:
        if not isinstance(meta, dict) or not meta.get("crc32c"):
            raise TransientUploadError(
                f"the GCS destination {verb} no CRC32C for {sealed.name}, so the upload cannot be "
                "confirmed; it will be sent again"
            )
        if str(meta.get("size")) != str(sealed.size):
            raise TransientUploadError(
                f"the GCS destination {verb} {sealed.name} at another size than was sent; "
                "it will be sent again"
            )
        if meta["crc32c"] != crc:
            raise TransientUploadError(
                f"the GCS destination {verb} {sealed.name} with another CRC32C than was sent "
                "(damaged in transit); it will be sent again"
            )
        if (meta.get("metadata") or {}).get("sha256") != sealed.sha256:
            raise TransientUploadError(
                f"the GCS destination lost the sha256 metadata of {sealed.name}; "
                "it will be sent again"
            )

    async def _readback(self, key: str, sealed: SealedFile) -> None:
        _, storage = self._open()
        readback = Readback()
        action = "download"
        try:
            stream = await storage.download_stream(
                self.bucket, key, headers=await self._auth(sealed.name)
            )
            while chunk := await stream.read(1 << 20):
                await readback.update(chunk)
        except aiohttp.ClientResponseError as exc:
            raise classify_status(exc.status, "", action, sealed.name) from None
        except UploadError:
            raise
        except Exception as exc:
            raise unreachable(exc, action, sealed.name) from None
        readback.check(sealed, "the GCS destination")


def _held_from(header: str | None) -> int:
    """``Range: bytes=0-N`` -> N + 1 bytes held; no header -> none."""
    if not header:
        return 0
    m = RANGE_RE.fullmatch(header.strip())
    return int(m.group(1)) + 1 if m else 0


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any] | None:
    try:
        data = await resp.json(content_type=None)
    except Exception:
        return None
    return data if isinstance(data, dict) else None
