"""The storage adapter interface, and building one from a grant.

Each provider lives in its own module (``s3.py``, ``gcs.py``, ``azure.py``, ``ftp.py``,
``file.py``) and maps its SDK's errors onto ``errors.TransientUploadError`` /
``errors.PermanentUploadError``; each quirk of a provider stays in its module. Adapters read
through ``source.py`` and confirm through ``confirm.py``: they never import this registry back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from shared.events.transcodes import SealedFile
from shared.events.uploads import RemoteFile
from shared.vault_rpc import Grant

from .errors import PermanentUploadError
from .resume import ResumeSlot
from .source import Source


class Backend(Protocol):
    async def upload(
        self, source: Source | Path, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> RemoteFile:
        """Send ``source`` (a ``Path`` is a file in the backup folder) to ``key``, confirm it
        arrived intact, and describe the remote copy.

        Must read ``source`` in one streaming pass with bounded memory, and raise
        ``LocalIntegrityError`` (nothing left behind as good) if its SHA-256 or size differs from
        ``sealed``. What an interrupted upload needs to go on later is kept in ``slot`` (and
        cleared once the file is confirmed)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the remote object at ``key`` (the adapter's own layout, as for ``upload``).

        An object that is not there is not an error; anything else that stops the delete raises
        ``TransientUploadError`` / ``PermanentUploadError``."""
        ...

    async def close(self) -> None: ...


def build(grant: Grant, *, part_size: int, part_concurrency: int = 1) -> Backend:
    config, secret = grant.config, grant.secret
    if grant.provider == "s3":
        from .s3 import S3Backend

        return S3Backend(config, secret, part_size=part_size, part_concurrency=part_concurrency)
    if grant.provider == "gcs":
        from .gcs import GCSBackend

        return GCSBackend(config, secret, part_size=part_size)
    if grant.provider == "azure":
        from .azure import AzureBackend

        return AzureBackend(config, secret, part_size=part_size)
    if grant.provider == "ftp":
        from .ftp import FTPBackend

        return FTPBackend(config, secret)
    if grant.provider == "file":
        from .file import FileBackend

        return FileBackend(config)
    raise PermanentUploadError(
        f"provider {grant.provider!r} is not supported by this uploader; upgrade it"
    )
