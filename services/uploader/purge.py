"""Deleting a recording's backup folder once its upload is confirmed (idempotent)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from shared.backup import recording_dir


@dataclass(frozen=True)
class Purged:
    bytes_freed: int
    files: int


def purge_recording(root: Path, tenant_id: str, recording_id: str) -> Purged:
    """Delete ``<root>/<tenant>/<rid>/`` (capture and output). A folder already gone is a no-op
    that reports zero."""
    folder = recording_dir(root, tenant_id, recording_id)
    if not folder.exists():
        return Purged(0, 0)
    total = files = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += (Path(dirpath) / name).lstat().st_size
                files += 1
            except FileNotFoundError:
                pass
    shutil.rmtree(folder)
    return Purged(total, files)
