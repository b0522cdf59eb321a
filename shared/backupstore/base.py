"""The backup store's protocol, what it says about an object, and the keys it accepts.

Keys are relative POSIX paths in the layout of ``shared/backup.py``:

    <tenant_id>/<recording_id>/capture/<participant_id>/<track_id>/<seq>.rgc
    <tenant_id>/<recording_id>/output-<attempt>/<file>   (the transcoder's, per attempt)

The store itself only insists that a key is a plain path of safe segments (so that neither a
folder nor an object store can be escaped or confused), not on this layout: the builders below
are where the layout's ids are checked, with ``shared/ids.py``'s rules. A prefix always names a
folder: ``ten_a/rec_b`` covers ``ten_a/rec_b/...`` and never ``ten_a/rec_bc/...``, which is what
makes ``delete_prefix`` safe to use for a purge.
"""

from __future__ import annotations

import base64
import builtins
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from isal.isal_zlib import crc32

from ..backup import segment_name
from ..ids import TENANT_ID_RE, is_recording_id, is_safe_name
from .blocking import BlockingRead
from .errors import UnsafeKey

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (all but the last)
DEFAULT_PART_SIZE = 16 * MiB
MAX_KEY_LENGTH = 1024  # S3's limit, in UTF-8 bytes (our keys are ASCII)
# A leading letter or digit: no "." or "..", no hidden names (the local store keeps its temp
# files and sidecars under names that start with a dot, so they can never be a key).
SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@dataclass(frozen=True)
class StoredObject:
    """One object as the store knows it.

    ``sha256`` is the hex SHA-256 the object was stored with (None when the store cannot tell
    without reading it, e.g. in an S3 listing). ``crc32`` is the CRC-32 as S3 reports it: base64
    of the big-endian value, and for a multipart object the composite ``X==-N`` (the CRC-32 of the
    parts' CRC-32s), so it can be compared to what the store itself validated.
    """

    key: str
    size: int
    sha256: str | None = None
    crc32: str | None = None

    @property
    def tenant(self) -> str:
        return self.key.split("/", 1)[0]


@runtime_checkable
class BackupStore(Protocol):
    """The temporary backup (captures and outputs), on a local folder or an object store.

    Every method may raise the ``errors`` tree; nothing else escapes (bar programming errors such
    as a negative ``start``).
    """

    @property
    def url(self) -> str:
        """Where the backup lives, for ``resguardo status``: never a secret."""
        ...

    async def put_file(self, key: str, local_path: Path, *, sha256: str) -> StoredObject:
        """Store ``local_path`` at ``key``, replacing what was there.

        The file is read once; the SHA-256 of the bytes sent must equal ``sha256`` or
        ``ChecksumMismatch`` is raised with nothing left visible (an older object at the key
        stays). The store checks a CRC-32 of what it received where it can."""
        ...

    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str | None = None, crc32: int | None = None
    ) -> StoredObject:
        """Store a small object. ``sha256`` is checked before anything is sent; ``crc32``
        (computed when not given) is checked by the store itself: on S3 by the server."""
        ...

    def open_read(self, key: str, *, start: int = 0) -> AsyncIterator[bytes]:
        """Stream the object from byte ``start`` (to resume a copy). ``start`` equal to the size
        yields nothing; beyond it is an error. Errors arrive with the first chunk."""
        ...

    async def open_blocking(self, key: str, *, start: int = 0) -> BlockingRead:
        """The object from byte ``start`` as a blocking binary reader (``readinto``, ``read``,
        ``close``) for a worker thread: the cheapest way to stream a large object into buffers
        of the caller's. Its reads raise ``StoreUnavailable`` (or ``OSError``) if the stream
        breaks; open again from where it stopped."""
        ...

    async def read_bytes(self, key: str) -> bytes:
        """The whole object in memory: for small ones (manifests, SHA256SUMS)."""
        ...

    async def stat(self, key: str) -> StoredObject | None:
        """The object at ``key`` with its digests, or None if there is none."""
        ...

    async def list(self, prefix: str = "") -> builtins.list[StoredObject]:
        """Every object under the folder ``prefix`` (all when empty), sorted by key."""
        ...

    async def delete(self, key: str) -> None:
        """Remove one object; a missing one is not an error (deletes are retried)."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove everything under the folder ``prefix`` (a purge); returns how many objects.
        An empty prefix is refused: nothing deletes the whole backup by accident."""
        ...

    async def usage_by_tenant(self) -> dict[str, int]:
        """Bytes stored per tenant (the key's first segment)."""
        ...

    async def check(self) -> None:
        """Fail fast (seconds, never a hang) with a clear sentence if the store is unusable."""
        ...

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """``key`` itself if it is a relative path of safe segments, else ``UnsafeKey``."""
    if not isinstance(key, str) or not key:
        raise UnsafeKey("a backup key must be a non-empty relative path")
    if len(key.encode()) > MAX_KEY_LENGTH:
        raise UnsafeKey(f"the backup key {key[:64]!r}... is longer than {MAX_KEY_LENGTH} bytes")
    for segment in key.split("/"):
        if not SEGMENT_RE.match(segment):
            raise UnsafeKey(
                f"the backup key {key!r} is not a relative path of safe segments "
                "(letters, digits, '.', '_' and '-', not starting with '.')"
            )
    return key


def check_prefix(prefix: str) -> str:
    """A folder prefix without its trailing slash ('' for everything), checked like a key."""
    if prefix in ("", "/"):
        return ""
    return check_key(prefix.removesuffix("/"))


def under(prefix: str, key: str) -> bool:
    """Is ``key`` inside the folder ``prefix`` (as returned by ``check_prefix``)?"""
    return not prefix or key.startswith(prefix + "/")


def recording_prefix(tenant_id: str, recording_id: str) -> str:
    if not TENANT_ID_RE.match(tenant_id):
        raise UnsafeKey(f"tenant id {tenant_id!r} is not valid")
    if not is_recording_id(recording_id):
        raise UnsafeKey(f"recording id {recording_id!r} is not valid")
    return f"{tenant_id}/{recording_id}"


def capture_key(
    tenant_id: str, recording_id: str, participant_id: str, track_id: str, seq: int
) -> str:
    for part in (participant_id, track_id):
        if not is_safe_name(part):
            raise UnsafeKey(f"name {part!r} is not a safe path segment")
    if seq < 0:
        raise UnsafeKey(f"segment number {seq} is negative")
    rec = recording_prefix(tenant_id, recording_id)
    return f"{rec}/capture/{participant_id}/{track_id}/{segment_name(seq)}"


def output_key(tenant_id: str, recording_id: str, name: str) -> str:
    if not SEGMENT_RE.match(name):
        raise UnsafeKey(f"output file name {name!r} is not a safe path segment")
    return f"{recording_prefix(tenant_id, recording_id)}/output/{name}"


def b64_crc32(value: int) -> str:
    """S3's form of a CRC-32: base64 of the four big-endian bytes."""
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def composite_crc32(part_crcs: builtins.list[int]) -> str:
    """What S3 reports for a multipart CRC-32 upload: CRC-32 of the raw part CRC-32s, ``-N``."""
    raw = b"".join(c.to_bytes(4, "big") for c in part_crcs)
    return f"{b64_crc32(crc32(raw))}-{len(part_crcs)}"


def same_crc32(stored: str, expected: str) -> bool:
    """Compare a reported CRC-32 to ours; some stores omit the composite's ``-N``."""
    exp_value, _, exp_parts = expected.partition("-")
    got_value, _, got_parts = stored.partition("-")
    return got_value == exp_value and (not got_parts or got_parts == exp_parts)


def tally(objects: builtins.list[StoredObject]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for obj in objects:
        usage[obj.tenant] = usage.get(obj.tenant, 0) + obj.size
    return usage
