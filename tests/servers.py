"""Real servers for tests, each on a free loopback port in a temp dir, stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shared.embedded import free_port, python_env, wait_for_port
from shared.procs import die_with_parent

REPO = Path(__file__).resolve().parent.parent


@dataclass
class MotoS3:
    url: str
    proc: subprocess.Popen[bytes]
    access_key: str = "testing-access-key"
    secret_key: str = "testing-secret-key"
    region: str = "us-east-1"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


@contextmanager
def moto_s3(log_dir: Path) -> Iterator[MotoS3]:
    port = free_port()
    log = (log_dir / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        env=python_env(),
        preexec_fn=die_with_parent(),  # a killed pytest leaves no server behind
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield MotoS3(url=f"http://127.0.0.1:{port}", proc=proc)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class ServiceProcess:
    """One of our services as a real OS process (``python -m services.<name>``)."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ServiceProcess:
        self._log = self.log_path.open("ab")
        env = {**python_env(), **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=die_with_parent(),  # a killed pytest leaves no service behind
        )
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc else None

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


def wait_until(
    predicate: Any, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")


def service_env(**values: str | Path) -> dict[str, str]:
    return {f"RESGUARDO_{k.upper()}": str(v) for k, v in values.items()} | {
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
