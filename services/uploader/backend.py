"""The storage adapter interface, and building one from a grant.

Each provider lives in its own module (``s3.py``, ``file.py``) and maps its SDK's errors onto
``errors.TransientUploadError`` / ``errors.PermanentUploadError``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from shared.events.transcodes import SealedFile
from shared.events.uploads import RemoteFile
from shared.vault_rpc import Grant

from .errors import LocalIntegrityError, PermanentUploadError, TransientUploadError


class Backend(Protocol):
    async def upload(self, local: Path, key: str, sealed: SealedFile) -> RemoteFile:
        """Send ``local`` to ``key``, confirm it arrived intact, and describe the remote copy.

        Must read ``local`` in one streaming pass with bounded memory, and raise
        ``LocalIntegrityError`` (nothing left behind as good) if its SHA-256 or size differs from
        ``sealed``."""
        ...

    async def close(self) -> None: ...


def build(grant: Grant, *, part_size: int) -> Backend:
    if grant.provider == "s3":
        from .s3 import S3Backend

        return S3Backend(grant.config, grant.secret, part_size=part_size)
    if grant.provider == "file":
        from .file import FileBackend

        return FileBackend(grant.config)
    raise PermanentUploadError(
        f"provider {grant.provider!r} is not supported by this uploader; upgrade it"
    )


def check_local(local: Path, sealed: SealedFile) -> None:
    """Fail fast (before any byte is sent) when the file is missing or has the wrong size."""
    try:
        size = local.stat().st_size
    except FileNotFoundError:
        raise LocalIntegrityError(
            f"backup file {sealed.name} is missing; the recording is retained for an operator"
        ) from None
    except OSError as exc:
        raise TransientUploadError(
            f"backup file {sealed.name} could not be read ({type(exc).__name__})"
        ) from None
    if size != sealed.size:
        raise LocalIntegrityError(
            f"backup file {sealed.name} is {size} bytes but was sealed at {sealed.size}; it "
            "changed at rest and is not sent (retained for an operator)"
        )


def mismatch(sealed: SealedFile, size: int) -> LocalIntegrityError:
    return LocalIntegrityError(
        f"backup file {sealed.name} no longer matches its sealed SHA-256 ({size} bytes read); "
        "it changed at rest and is not sent as good (retained for an operator)"
    )


class LocalReader:
    """Reads one file in chunks of ``chunk`` bytes off the event loop, hashing SHA-256 as it
    goes: one pass, at most one chunk in memory."""

    def __init__(self, local: Path, sealed: SealedFile, chunk: int) -> None:
        self.local = local
        self.sealed = sealed
        self.chunk = chunk
        self.sha = hashlib.sha256()
        self.size = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            fh = await asyncio.to_thread(self.local.open, "rb")
        except FileNotFoundError:
            raise LocalIntegrityError(
                f"backup file {self.sealed.name} is missing; the recording is retained"
            ) from None
        try:
            while True:
                data = await asyncio.to_thread(self._read, fh)
                if not data:
                    return
                yield data
        finally:
            fh.close()

    def _read(self, fh: Any) -> bytes:
        data: bytes = fh.read(self.chunk)
        self.sha.update(data)
        self.size += len(data)
        return data

    def verify(self) -> None:
        """After the last chunk: the bytes read are exactly the sealed ones."""
        if self.size != self.sealed.size or self.sha.hexdigest() != self.sealed.sha256:
            raise mismatch(self.sealed, self.size)
