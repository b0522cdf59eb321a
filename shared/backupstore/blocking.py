"""Reading an object of the S3 store with plain blocking I/O, for a worker thread.

Streaming a large object through aiohttp costs about three times the CPU of the bytes' own
SHA-256: each piece is received into a new ``bytes``, buffered, sliced and copied again before
the caller has it. A reader that hashes in a worker thread anyway (the uploader's) does better
with a presigned GET read by ``http.client`` straight into its own buffer (``readinto`` is one
``recv_into`` from the kernel), as the local folder is read with ``readinto`` from a file.

The presigned URL is a bearer capability for this one object for a few minutes: it stays inside
this module (never in a message, log or exception) and is dropped with the response.
"""

from __future__ import annotations

import functools
import http.client
import os
import ssl
from collections.abc import Callable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from .errors import ObjectMissing, StoreRefused, StoreUnavailable

PRESIGN_SECONDS = 300
T = TypeVar("T")


class BlockingRead(Protocol):
    """What a worker thread reads an object with: a file opened for binary reading will do."""

    def readinto(self, buffer: memoryview, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The CA bundle botocore itself trusts (``AWS_CA_BUNDLE``, else its default): loaded once
    per process, not once per GET."""
    from botocore.httpsession import get_cert_path

    bundle = os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
    return ssl.create_default_context(cafile=bundle if isinstance(bundle, str) else None)


def get(url: str, *, start: int, timeout: float, key: str, where: str) -> BlockingRead | None:
    """GET a presigned ``url`` from byte ``start``: the open response, positioned at its body
    (None when the store says ``start`` is past the end: the caller tells end from beyond).

    Runs in a worker thread. Errors are the backup store's, in our own words (``http.client``
    and ``ssl`` messages can quote the request line, which holds the signature)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=_tls_context()
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        headers = {"Range": f"bytes={start}-"} if start else {}
        conn.request("GET", f"{parts.path}?{parts.query}", headers=headers)
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise StoreUnavailable(
            f"{where} could not be reached to read {key} ({type(exc).__name__}); check "
            "RESGUARDO_BACKUP_S3_ENDPOINT and that the store is running"
        ) from None
    if resp.status in (200, 206):
        return _Response(conn, resp)
    status = resp.status
    conn.close()
    said = f"{where} answered {status} to read {key}"
    if status == 404:
        raise ObjectMissing(f"{where} holds nothing at {key}")
    if status == 416:
        return None
    if status in (401, 403):
        raise StoreRefused(f"{said}: it refused the credentials or access")
    if status >= 500 or status in (408, 429):
        raise StoreUnavailable(f"{said}; try again later")
    raise StoreRefused(f"{said}; check the store's settings")


def _guarded(read: Callable[[], T]) -> T:
    """A read that fails half-way is transient: the caller opens again from where it stopped."""
    try:
        return read()
    except (OSError, http.client.HTTPException) as exc:
        raise StoreUnavailable(f"the backup store's stream broke ({type(exc).__name__})") from None


class _Response:
    """The response and its connection, closed together; errors while reading are transient."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp

    def readinto(self, buffer: memoryview, /) -> int:
        return _guarded(lambda: self._resp.readinto(buffer))

    def read(self, size: int = -1, /) -> bytes:
        return _guarded(lambda: self._resp.read(size))

    def close(self) -> None:
        self._resp.close()
        self._conn.close()
