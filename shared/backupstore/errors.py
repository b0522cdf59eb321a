"""What can go wrong with a backup store, in words a caller can act on.

One small tree, the same for every implementation: adapters map their SDK's or the OS's errors
onto it, in their own sentences (an SDK's message can echo request details, so it is never
reused). ``transient`` says whether trying the same thing again later can succeed: callers retry
on it instead of matching class names.

    BackupStoreError
    ├── StoreUnavailable   transient: unreachable, timed out, 5xx, throttled, disk full
    ├── StoreRefused       permanent: bad credentials, access denied, no such bucket
    ├── ObjectMissing      the key holds nothing
    ├── ChecksumMismatch   bytes differ from their digest (transient when corrupted in transit)
    └── UnsafeKey          a key or prefix that could escape its place (also a ValueError)
"""

from __future__ import annotations


class BackupStoreError(Exception):
    """Something the backup store could not do; the message is one sentence, free of secrets."""

    transient: bool = False


class StoreUnavailable(BackupStoreError):
    """The store could not be reached or did not answer in time: try again later."""

    transient = True


class StoreRefused(BackupStoreError):
    """The store answered but will not do it (credentials, permissions, missing bucket)."""


class ObjectMissing(BackupStoreError):
    """Nothing is stored at the key."""


class ChecksumMismatch(BackupStoreError):
    """The bytes do not match their SHA-256 or CRC-32; nothing was left visible.

    A local file that differs from the SHA-256 it was sealed with stays wrong however often it is
    sent (``transient=False``); bytes the store received damaged (S3's ``BadDigest``) can be sent
    again (``transient=True``).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class UnsafeKey(BackupStoreError, ValueError):
    """A key or prefix that is not a plain relative path of safe segments."""
