"""`resguardo nats-context` as a user runs it (a subprocess), against a real nats-server with the
users `resguardo up` makes: the context it writes logs in as the operator and reads everything,
while a service's login still cannot."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from resguardo.supervisor import nats_passwords, with_login
from shared import natsio
from shared.embedded import OPERATOR, NatsServer, system_users
from shared.events import STREAMS
from shared.ids import new_recording_id

# The fields natscontext writes, in its order (nats-io/jsm.go natscontext/context.go `settings`).
NATS_CLI_FIELDS = [
    "description", "url", "socks_proxy", "token", "user", "password", "creds", "nkey", "cert",
    "key", "ca", "nsc", "jetstream_domain", "jetstream_api_prefix", "jetstream_event_prefix",
    "inbox_prefix", "user_jwt", "user_seed", "color_scheme", "tls_first", "windows_cert_store",
    "windows_cert_match_by", "windows_cert_match", "windows_ca_certs_match",
]  # fmt: skip


class System:
    """A data dir laid out as `resguardo up` lays it out, with its nats-server running."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.config_home = tmp_path / "xdg"
        self.passwords = nats_passwords(self.data_dir / "secrets" / "nats")
        self.log = (tmp_path / "nats-server.log").open("wb")
        self.server = NatsServer(
            self.data_dir / "nats", users=system_users(self.passwords), log=self.log
        ).start()
        write_endpoints(self.data_dir, with_login(self.server.url, OPERATOR, self.operator))

    @property
    def operator(self) -> str:
        return self.passwords[OPERATOR]

    def env(self, **extra: str) -> dict[str, str]:
        return cli_env(self.data_dir, self.config_home, **extra)

    def context(self, name: str = "resguardo") -> Path:
        return self.config_home / "nats" / "context" / f"{name}.json"


def write_endpoints(data_dir: Path, nats_url: str) -> None:
    (data_dir / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / "run" / "endpoints.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    endpoints = {"nats_url": nats_url, "ca_file": str(data_dir / "tls" / "cert.pem")}
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(endpoints))


def cli_env(data_dir: Path, config_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESGUARDO_")}
    env.update(RESGUARDO_DATA_DIR=str(data_dir), XDG_CONFIG_HOME=str(config_home))
    return env | extra


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resguardo", "nats-context", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1 and proc.stdout == "", (proc.returncode, proc.stdout)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resguardo: "), proc.stderr
    return lines[0]


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    sys_ = System(tmp_path)
    try:
        yield sys_
    finally:
        sys_.server.stop()
        sys_.log.close()


async def connect(url: str, user: str, password: str, errors: list[str]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    return await nats.connect(
        url.split(","),
        user=user,
        password=password,
        inbox_prefix=natsio.inbox_prefix(user),
        error_cb=on_error,
        allow_reconnect=False,
        max_reconnect_attempts=0,
    )


async def violation(errors: list[str], what: str) -> bool:
    for _ in range(50):
        if any("permissions violation" in e and what in e for e in errors):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_the_context_logs_in_as_the_operator_and_reads_every_stream(
    system: System,
) -> None:
    proc = run(system.env())
    assert proc.returncode == 0, proc.stderr
    path = system.context()
    assert str(path) in proc.stdout and system.operator not in proc.stdout + proc.stderr
    for line in ("nats --context resguardo stream ls", "nats context select resguardo"):
        assert line in proc.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    ctx: dict[str, Any] = json.loads(path.read_text())
    assert list(ctx) == NATS_CLI_FIELDS
    assert ctx["url"] == system.server.url and "@" not in ctx["url"]
    assert (ctx["user"], ctx["password"]) == (OPERATOR, system.operator)
    assert ctx["ca"] == "" and ctx["tls_first"] is False
    assert str(system.data_dir) in ctx["description"]
    assert not (system.config_home / "nats" / "context.txt").exists()
    assert not list(path.parent.glob("*.tmp-*"))

    errors: list[str] = []
    nc = await connect(ctx["url"], ctx["user"], ctx["password"], errors)
    proxy_errors: list[str] = []
    proxy = await connect(ctx["url"], "proxy", system.passwords["proxy"], proxy_errors)
    try:
        js = nc.jetstream()
        await natsio.ensure_streams(js)
        live = await nc.subscribe("captures.>")
        rid = new_recording_id()
        ack = await js.publish(f"captures.{rid}.probe", b"hello")
        assert (await live.next_msg(timeout=5)).data == b"hello"
        stored = await js.get_msg("CAPTURES", ack.seq)
        assert stored.data == b"hello"
        for spec in STREAMS:
            assert (await js.stream_info(spec.name)).config.name == spec.name

        # A service's login still cannot listen on another's subjects nor delete or purge.
        await proxy.subscribe("captures.>")
        await proxy.flush()
        assert await violation(proxy_errors, 'subscription to "captures.>"'), proxy_errors
        for action in ("DELETE", "PURGE"):
            with pytest.raises(nats.errors.TimeoutError):
                await proxy.request(f"$JS.API.STREAM.{action}.CAPTURES", b"", timeout=0.5)
            subject = f'publish to "$js.api.stream.{action.lower()}.captures"'
            assert await violation(proxy_errors, subject), proxy_errors
        assert (await js.stream_info("CAPTURES")).state.messages == 1
        assert errors == []
    finally:
        await proxy.close()
        await nc.close()
    with pytest.raises((nats.errors.Error, OSError)):
        await connect(ctx["url"], OPERATOR, "not-the-password", [])


def test_json_select_and_show_password(system: System) -> None:
    proc = run(system.env(), "ops", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {
        "context": "ops",
        "path": str(system.context("ops")),
        "url": system.server.url,
        "user": OPERATOR,
    }
    shown = json.loads(run(system.env(), "ops", "--json", "--show-password").stdout)
    assert shown["password"] == system.operator
    human = run(system.env(), "--show-password", "--select")
    assert human.returncode == 0 and system.operator in human.stdout, human.stderr
    nats_dir = system.config_home / "nats"
    assert (nats_dir / "context.txt").read_text() == "resguardo"
    assert stat.S_IMODE((nats_dir / "context.txt").stat().st_mode) == 0o600
    assert run(system.env(), "ops", "--select").returncode == 0
    assert (nats_dir / "context.txt").read_text() == "ops"
    assert (nats_dir / "previous-context.txt").read_text() == "resguardo"


def test_without_xdg_config_home_it_goes_to_dot_config(system: System, tmp_path: Path) -> None:
    env = system.env(HOME=str(tmp_path / "home"))
    del env["XDG_CONFIG_HOME"]
    assert run(env).returncode == 0
    assert json.loads((tmp_path / "home/.config/nats/context/resguardo.json").read_text())["user"]


def test_refusals(tmp_path: Path) -> None:
    data, xdg = tmp_path / "never-started", tmp_path / "xdg"
    line = refused(run(cli_env(data, xdg)))
    assert "not running" in line and "resguardo up" in line and str(data) in line
    line = refused(run(cli_env(data, xdg, RESGUARDO_NATS_URL="nats://nats.example:4222")))
    assert "your own server's login" in line and "nats.example" not in line
    write_endpoints(data, "nats://127.0.0.1:4222")  # `resguardo up` against an external server
    assert "your own server's login" in refused(run(cli_env(data, xdg)))
    write_endpoints(data, "nats://operator:x@127.0.0.1:4222")  # no password file
    assert "operator's password file" in refused(run(cli_env(data, xdg)))
    assert "not a context name" in refused(run(cli_env(data, xdg), "../evil"))
    assert not xdg.exists()


def test_tls_urls_name_the_ca_and_every_server_loses_its_login(tmp_path: Path) -> None:
    data, xdg = tmp_path / "data", tmp_path / "xdg"
    password = nats_passwords(data / "secrets" / "nats")[OPERATOR]
    urls = [f"tls://127.0.0.1:{port}" for port in (4222, 4223)]
    write_endpoints(data, ",".join(with_login(u, OPERATOR, password) for u in urls))
    assert run(cli_env(data, xdg)).returncode == 0
    ctx = json.loads((xdg / "nats" / "context" / "resguardo.json").read_text())
    assert ctx["url"] == ",".join(urls) and ctx["password"] == password
    assert ctx["ca"] == str(data / "tls" / "cert.pem")
