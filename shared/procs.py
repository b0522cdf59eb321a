"""Child processes that cannot outlive their parent, and stopping processes by their pid.

Why: a supervisor ended by SIGKILL (the OOM killer) or by a closed terminal runs no cleanup, so
its children must notice by themselves. On Linux each child asks the kernel for a signal when the
process that started it dies (``PR_SET_PDEATHSIG``): services and nats-server get SIGTERM (a
graceful stop within their drain time), PostgreSQL gets SIGINT (its "fast" shutdown).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies.

    It runs in the child after any ``user=`` switch (a uid change clears the setting, so it must
    come after). If the parent is already gone by then, the child signals itself at once. The
    parent is the thread that forked: start children from the main thread. None off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def write_pid(path: Path, pid: int) -> None:
    """``pid`` and its start time, so a later reader can tell it from a reused pid."""
    created = psutil.Process(pid).create_time()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{pid} {created:.2f}\n")
    tmp.replace(path)


def read_pid(path: Path) -> psutil.Process | None:
    """The live process a pid file names, or None (gone, reused, or no file)."""
    try:
        fields = path.read_text().split()
        pid = int(fields[0])
        created = float(fields[1]) if len(fields) > 1 else None
        proc = psutil.Process(pid)
        if created is not None and abs(proc.create_time() - created) > 1.0:
            return None  # the pid was reused by another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        return None


def stop_processes(
    procs: list[psutil.Process], *, grace_s: float, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig`` to each, wait up to ``grace_s`` for all of them, then SIGKILL what is left."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for ``procs`` to end on their own; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _running(p)]
    return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
