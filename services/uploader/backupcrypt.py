"""Reading the encrypted backup (``shared.chunkcrypt``) in the uploader: what opens one file,
and the small adapters between a store's byte stream and the decrypting reader."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client as NATS

from shared import chunkcrypt
from shared.backupstore.blocking import BlockingRead
from shared.events.transcodes import SealedFile
from shared.recording_key import RecordingKey, RecordingKeyError, fetch_recording_key

from .errors import PermanentUploadError, TransientUploadError


@dataclass(frozen=True)
class Crypt:
    """How to open one encrypted backup file: the recording's key (the job's copy, wiped when
    the job ends), its id and the file's name in the recording (the AAD binds both)."""

    key: bytearray
    recording_id: str
    name: str

    def __repr__(self) -> str:
        return f"<Crypt {self.recording_id}/{self.name}>"


class Prefixed:
    """A plaintext (pre-encryption) object whose first bytes were read to look for the magic."""

    def __init__(self, head: bytes, raw: BlockingRead) -> None:
        self._head, self._raw = head, raw

    def readinto(self, view: memoryview, /) -> int:
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._raw.readinto(view)

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            head, self._head = self._head[:size] if size >= 0 else self._head, b""
            return head
        return self._raw.read(size)

    def close(self) -> None:
        self._raw.close()


def plain_size(sealed: SealedFile, stored: int, crypt: Crypt | None) -> bool:
    """Does an object of ``stored`` bytes hold the sealed file (encrypted, or as it was)?"""
    if stored == sealed.size:
        return True
    return crypt is not None and stored == chunkcrypt.ciphertext_size(sealed.size)


def read_exactly(raw: BlockingRead, n: int) -> bytes:
    out = b""
    while len(out) < n:
        more = raw.read(n - len(out))
        if not more:
            break
        out += more
    return out


async def recording_key(nc: NATS, recording_id: str, tenant_id: str) -> RecordingKey:
    """The recording's data key for one upload job, its errors as the upload's."""
    try:
        return await fetch_recording_key(
            nc, recording_id=recording_id, tenant_id=tenant_id, purpose="upload", service="uploader"
        )
    except RecordingKeyError as exc:
        if exc.transient:
            raise TransientUploadError(str(exc)) from None
        raise PermanentUploadError(f"{exc}; the backup cannot be read") from None
