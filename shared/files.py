"""Files that hold secrets or state others read: written whole or not at all, owner-only."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 (its folder 0700 if made here).

    A temporary file in the same folder is written, fsynced and renamed over ``path``, and the
    folder is fsynced: a crash or a concurrent reader sees the old file or the new one, never a
    mix, and a secret is never readable by others, not even for an instant.
    """
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
