"""A real SeaweedFS for tests: master, volume server, filer and S3 gateway in one ``weed server``.

Unlike moto, SeaweedFS validates what it is sent (a wrong CRC-32 is ``BadDigest``, a wrong secret
``SignatureDoesNotMatch``), so tests against it prove the store checks, not only the client.

- Every port it opens is given explicitly (``PORT_FLAGS``; the Iceberg and Lance side servers
  are turned off), all on 127.0.0.1: two servers, or one and anything else, never clash.
- The credentials are in ``identities.json`` (mode 0600), never on its command line.
- ``master.toml`` in its working folder makes each bucket (a "collection") grow one volume
  instead of seven, so a bucket per test stays cheap.
- Ready when ``create_bucket`` succeeds (~3-10 s); stopped by its pid: SIGTERM, then SIGKILL
  after a grace period (its filer waits 15 s for its own gRPC streams before it exits).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from resguardo.chaos_seaweed import weed_binary
from shared.embedded import free_port, python_env
from shared.procs import die_with_parent

PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "metricsPort",
)


@dataclass
class SeaweedS3:
    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    pid: int
    region: str = "us-east-1"

    def client(self, **config: Any) -> Any:
        from resguardo.chaos_seaweed import s3_client

        return s3_client(
            self.endpoint, self.region, self.access_key_id, self.secret_access_key, **config
        )

    def new_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """Delete a bucket and all in it (-s3.allowDeleteBucketNotEmpty), freeing its volume."""
        self.client().delete_bucket(Bucket=name)


class SeaweedServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.work_dir / "weed.log"

    def _ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        while len(ports) < len(PORT_FLAGS):
            port = free_port()
            if port not in ports.values():
                ports[PORT_FLAGS[len(ports)]] = port
        return ports

    def _command(self, ports: dict[str, int]) -> list[str]:
        data = self.work_dir / "data"
        data.mkdir(parents=True, exist_ok=True)  # weed refuses a -dir that does not exist
        command = [
            weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-filer",
            "-s3",
            f"-s3.config={self.work_dir / 'identities.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.allowDeleteBucketNotEmpty=true",
            # By default it creates a missing bucket on the first put by an admin: a misspelt
            # bucket would then be a new, empty backup instead of an error, as on AWS.
            "-s3.autoCreateBucket=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=100",
            "-volume.preStopSeconds=0",
        ]
        command += [f"-{flag}={port}" for flag, port in ports.items()]
        # Default sockets are /tmp/seaweedfs-<role>-<port>.sock: keep ours in our folder when
        # the path fits in a socket address.
        for role in ("filer", "s3"):
            sock = self.work_dir / f"{role}.sock"
            if len(str(sock)) < 100:
                command.append(f"-{role}.localSocket={sock}")
        return command

    def start(self, timeout: float = 60.0, attempts: int = 3) -> SeaweedS3:
        """Start on fresh ports; a port taken between probe and bind means another try."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        access, secret = "test-" + secrets.token_hex(8), secrets.token_urlsafe(24)
        identities = {
            "identities": [
                {
                    "name": "resguardo-test",
                    "credentials": [{"accessKey": access, "secretKey": secret}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.work_dir / "identities.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        (self.work_dir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        for attempt in range(attempts):
            ports = self._ports()
            self._log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                self._command(ports),
                cwd=self.work_dir,
                env=python_env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
            server = SeaweedS3(
                endpoint=f"http://127.0.0.1:{ports['s3.port']}",
                access_key_id=access,
                secret_access_key=secret,
                pid=self.proc.pid,
            )
            if self._wait_ready(server, timeout):
                return server
            self.stop(grace=2.0)
            if attempt == attempts - 1:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS did not start; the end of its log:\n{tail}")
        raise AssertionError("unreachable")

    def _wait_ready(self, server: SeaweedS3, timeout: float) -> bool:
        """Ready once the S3 gateway can create a bucket (the master, volume server and filer
        behind it must all be up): False if the process exits or time runs out first."""
        client = server.client(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                client.create_bucket(Bucket="ready-probe")
                return True
            except Exception as exc:
                if "BucketAlreadyExists" in type(exc).__name__ + str(exc):
                    return True
                time.sleep(0.25)
        return False

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to its pid, SIGKILL once ``grace`` seconds have passed."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def seaweed_s3(work_dir: Path, *, grace: float = 10.0) -> Iterator[SeaweedS3]:
    server = SeaweedServer(work_dir)
    s3 = server.start()
    try:
        yield s3
    finally:
        server.stop(grace=grace)
