"""One protocol for the temporary backup (captures and outputs), on a folder or an object store.

``BackupStore`` (``base.py``) is what services use; ``LocalBackupStore`` (``local.py``, the
embedded default) and ``S3BackupStore`` (``s3.py``, any S3-compatible store) implement it, and
``config.from_url`` / ``config.from_env`` pick one from the ``RESGUARDO_BACKUP_*`` settings. The
implementations are imported lazily by ``config``, so importing this package costs no SDK.
"""

from __future__ import annotations

from .base import (
    MIN_PART_SIZE,
    BackupStore,
    StoredObject,
    capture_key,
    check_key,
    check_prefix,
    output_key,
    recording_prefix,
)
from .errors import (
    BackupStoreError,
    ChecksumMismatch,
    ObjectMissing,
    StoreRefused,
    StoreUnavailable,
    UnsafeKey,
)

__all__ = [
    "MIN_PART_SIZE",
    "BackupStore",
    "BackupStoreError",
    "ChecksumMismatch",
    "ObjectMissing",
    "StoreRefused",
    "StoreUnavailable",
    "StoredObject",
    "UnsafeKey",
    "capture_key",
    "check_key",
    "check_prefix",
    "output_key",
    "recording_prefix",
]
