"""One supervised service process: started, watched, restarted with backoff, stopped."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shared import procs

log = logging.getLogger("resguardo.supervisor")

MAX_BACKOFF_S = 30.0
# Ran this long before it died: not a crash loop (those die within a start), so earlier deaths
# no longer lengthen the backoff. A service killed now and then (OOM, kill -9) is restarted in
# 0.5 s each time; a backoff grown to 30 s would outlast the proxies' close wait
# (RESGUARDO_PROXY_CLOSE_WAIT_S, 15 s) and a killed proxy's last segment, which only its own
# restart salvages, would be lost.
STABLE_AFTER_S = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)  # holds the service's NATS password
    log_path: Path
    run_dir: Path  # the supervisor's: pid files
    health_path: Path  # where the service writes its health URL (under its own data dir)
    proc: subprocess.Popen[bytes] | None = None
    backoff_level: int = 0
    restarts: int = 0  # every restart since the supervisor started, for `resguardo status`
    next_start: float = 0.0
    started_at: float = 0.0  # monotonic
    started_wall: float = 0.0
    last_exit_code: int | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.health_path.unlink(missing_ok=True)  # a dead one's URL
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches the supervisor alone, which stops
            # the children in order. The kernel still stops it if the supervisor dies.
            start_new_session=True,
            preexec_fn=procs.die_with_parent(signal.SIGTERM),
        )
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        # Operators (and the crash tests) find each service's current pid here.
        procs.write_pid(self.pid_path, self.proc.pid)

    def poll(self, now: float) -> None:
        """Restart a dead child once its backoff has passed."""
        if self.proc is None:
            if now >= self.next_start:
                self.start()
                self.restarts += 1
                log.warning("restarted", extra={"child": self.name, "restarts": self.restarts})
            return
        code = self.proc.poll()
        if code is None:
            return
        self.last_exit_code = code
        if now - self.started_at >= STABLE_AFTER_S:
            self.backoff_level = 0
        self.backoff_level += 1
        backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** (self.backoff_level - 1))
        log.warning(
            "child exited; restarting", extra={"child": self.name, "code": code, "in_s": backoff}
        )
        self.proc = None
        self.next_start = now + backoff

    def ask_to_stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()

    def wait_stopped(self, deadline: float) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        self.pid_path.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        up = self.proc is not None and self.proc.poll() is None
        try:
            health_url = self.health_path.read_text().strip()
        except FileNotFoundError:
            health_url = ""
        return {
            "state": "up" if up else "down",
            "pid": self.pid if up else None,
            "restarts": self.restarts,
            "started_at": self.started_wall if up else None,
            "last_exit_code": self.last_exit_code,
            "health_url": health_url,
            "log": str(self.log_path),
        }
