"""What ``resguardo up`` keeps in its data dir's ``run/`` folder, and the lock that makes it one.

- ``up.lock``: held (``flock``) by the running supervisor, with its pid inside. The kernel drops
  the lock when the process dies, however it dies, so a stale file never blocks a new start.
- ``<child>.pid``: pid and start time of every process the supervisor started (services,
  nats-server, postgres), so a new supervisor can find what an old one left behind.
- ``status.json``: the supervisor's view of its children, read by ``resguardo status``.
- ``endpoints.json``: URLs and file paths for tools (0600: it holds the operator's NATS login).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from shared import procs
from shared.files import write_private

LOCK_NAME = "up.lock"
STATUS_NAME = "status.json"


class AlreadyRunning(Exception):
    """Another supervisor holds the data dir; the message names its pid."""


class DataDirLock:
    """An exclusive, non-blocking lock on one data dir for the life of this process."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # O_CLOEXEC (Python's default): children must not inherit, or they would hold the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"`resguardo up` is already running on data dir {self.path.parent.parent} "
                f"(pid {holder}); stop it first, or set RESGUARDO_DATA_DIR to another folder."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def leftovers(run_dir: Path) -> dict[str, Any]:
    """Live processes named by pid files of an earlier run: ``{pid file stem: process}``."""
    found = {}
    for path in sorted(run_dir.glob("*.pid")):
        proc = procs.read_pid(path)
        if proc is not None and proc.pid != os.getpid():
            found[path.stem] = proc
        else:
            path.unlink(missing_ok=True)
    return found


def write_private_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON, 0600, atomically (a reader never sees half a file)."""
    write_private(path, json.dumps(value, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
