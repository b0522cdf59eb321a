"""How an adapter proves the remote copy is the sealed file: the provider's checksum, or a read
back (``verify=readback``, for stores that do not validate checksums)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from shared.events.transcodes import SealedFile

from .errors import PermanentUploadError, TransientUploadError

VERIFY_MODES = ("checksum", "readback")


def verify_mode(config: dict[str, Any]) -> str | None:
    """The destination's ``verify`` (None when unset: the adapter's default)."""
    mode = config.get("verify") or None
    if mode is not None and mode not in VERIFY_MODES:
        raise PermanentUploadError(
            "the destination's verify must be checksum or readback; fix the destination"
        )
    return None if mode is None else str(mode)


class Readback:
    """Hashes a copy read back from the destination and compares it with the sealed file."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    async def update(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._sha.update, chunk)  # keep the loop free on large files
        self.size += len(chunk)

    def check(self, sealed: SealedFile, where: str) -> None:
        if self.size != sealed.size or self._sha.hexdigest() != sealed.sha256:
            raise TransientUploadError(
                f"the copy of {sealed.name} read back from {where} differs from the backup; "
                "it will be sent again"
            )
