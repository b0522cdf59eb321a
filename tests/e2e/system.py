"""The whole system as a user runs it: `resguardo up` in a temp data dir, driven by the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from resguardo.datadir import read_json
from shared import natsio
from shared.embedded import free_port, python_env
from shared.events import STREAMS

from ..seaweed import SeaweedS3
from ..servers import REPO, wait_until


@dataclass
class RunningSystem:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path
    endpoints: dict[str, Any] = field(default_factory=dict)

    def cli(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "resguardo", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"resguardo {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def pid(self, service: str) -> int:
        return int((self.data_dir / "run" / f"{service}.pid").read_text().split()[0])

    def kill9(self, service: str) -> int:
        """SIGKILL one service; the supervisor restarts it. Returns the killed pid."""
        pid = self.pid(service)
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: self._pid_changed(service, pid),
            timeout=30,
            message=f"supervisor to restart {service}",
        )
        if service == "api":
            self.wait_api()
        return pid

    def wait_api(self) -> None:
        wait_until(
            lambda: self.cli("recordings", "list", "--json", check=False).returncode == 0,
            timeout=60,
            message="the API to answer",
        )

    def _pid_changed(self, service: str, old: int) -> bool:
        try:
            return self.pid(service) != old
        except (FileNotFoundError, ValueError):
            return False

    def wait_state(self, rid: str, states: set[str], timeout: float = 180) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            rec = self.cli_json("recordings", "show", rid)
            return rec if rec["state"] in states else None

        return wait_until(done, timeout=timeout, interval=0.5, message=f"{rid} to reach {states}")  # type: ignore[no-any-return]

    def logs(self) -> str:
        parts = [self.log_path.read_text(errors="replace")]
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            parts.append(f"--- {path.name} ---\n" + path.read_text(errors="replace"))
        return "\n".join(parts)


def system_env(data_dir: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `resguardo up` on ``data_dir`` with free ports of its own."""
    env = (
        python_env()
        | {
            "RESGUARDO_DATA_DIR": str(data_dir),
            "RESGUARDO_NATS_PORT": str(free_port()),
            "RESGUARDO_API_PORT": str(free_port()),
            "RESGUARDO_WHIP_PORT": str(free_port()),
            "RESGUARDO_HEALTH_PORT_BASE": "0",  # any free port per service, in run/*.health
            "PYTHONUNBUFFERED": "1",
        }
        | (extra_env or {})
    )
    for key in (
        "RESGUARDO_API_URL",
        "RESGUARDO_API_TOKEN",
        "RESGUARDO_NATS_URL",
        "RESGUARDO_DATABASE_URL",
    ):
        env.pop(key, None)
    return env


def start_system(
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
    *,
    env: dict[str, str] | None = None,
    up_args: tuple[str, ...] = (),
) -> RunningSystem:
    """`resguardo up` under ``tmp_path``; with ``env``, again with that environment (the same
    data dir and ports as an earlier run)."""
    data_dir = tmp_path / "data"
    env = env or system_env(data_dir, extra_env)
    data_dir = Path(env["RESGUARDO_DATA_DIR"])
    log_path = tmp_path / "up.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "resguardo", "up", *up_args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    system = RunningSystem(data_dir=data_dir, proc=proc, env=env, log_path=log_path)
    endpoints = data_dir / "run" / "endpoints.json"

    def written_by_this_run() -> bool:
        found = read_json(endpoints)
        if not (found and found.get("pid") == proc.pid):
            return False
        return Path(found["dev_token_file"]).exists()  # the (first) API has started

    try:
        wait_until(
            lambda: proc.poll() is not None or written_by_this_run(),
            timeout=60,
            message="resguardo up to write endpoints and the dev token",
        )
        if proc.poll() is not None:
            raise AssertionError(f"resguardo up exited:\n{system.logs()}")
        system.endpoints = json.loads(endpoints.read_text())
        system.wait_api()
    except BaseException:
        stop_system(system)
        raise
    return system


def stop_system(system: RunningSystem) -> None:
    if system.proc.poll() is None:
        system.proc.send_signal(signal.SIGINT)
        try:
            system.proc.wait(60)
        except subprocess.TimeoutExpired:
            system.proc.kill()
            system.proc.wait()


async def stream_events(nats_url: str, recording_id: str) -> list[tuple[str, str]]:
    """(stream, type) of every event of the recording in every stream, oldest first per stream."""
    nc = await nats.connect(nats_url.split(","))  # one node, or every node of a cluster
    js = nc.jetstream()
    out: list[tuple[str, str]] = []
    try:
        for spec in STREAMS:
            if spec.name == "DEADLETTER":
                continue
            for _seq, event in await natsio.read_subject(
                js, spec, f"{spec.prefix}.{recording_id}.>"
            ):
                out.append((spec.name, type(event).__struct_config__.tag))  # type: ignore[arg-type]
    finally:
        await nc.close()
    return out


def store_backup_env(weed: SeaweedS3, bucket: str, tmp_path: Path) -> dict[str, str]:
    """The settings that put the backup in ``bucket`` of a SeaweedFS S3 (the secret in a 0600
    file, as operators give it)."""
    secret = tmp_path / "backup-secret"
    secret.write_text(weed.secret_access_key + "\n")
    secret.chmod(0o600)
    return {
        "RESGUARDO_BACKUP_URL": f"s3://{bucket}/backup",
        "RESGUARDO_BACKUP_S3_ENDPOINT": weed.endpoint,
        "RESGUARDO_BACKUP_S3_REGION": weed.region,
        "RESGUARDO_BACKUP_S3_ACCESS_KEY_ID": weed.access_key_id,
        "RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE": str(secret),
    }
