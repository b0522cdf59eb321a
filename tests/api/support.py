"""Real processes for the API's tests: the API itself (and the vault when a test needs one),
each started with ``ServiceProcess`` against the real nats-server and PostgreSQL fixtures."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import msgspec
import nats
import pytest

from shared import vault_rpc
from shared.embedded import NatsServer, free_port
from shared.events import Event
from shared.natsio import publish
from shared.tls import client_context
from tests.servers import ServiceProcess, service_env

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 30.0, message: str = "condition"
) -> T:
    """Await ``probe()`` until it returns something truthy (no timed assertions: the timeout
    only stops a test that would otherwise hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        await asyncio.sleep(0.05)


@dataclass
class Response:
    status: int
    body: Any
    text: str

    @property
    def error(self) -> dict[str, str]:
        assert isinstance(self.body, dict) and "error" in self.body, self.text
        err = self.body["error"]
        assert isinstance(err, dict)
        return err


@dataclass
class ApiProcess:
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    port: int
    proc: ServiceProcess | None = None
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "secrets" / "admin-token").read_text().strip()

    @property
    def dev_token(self) -> str:
        return (self.data_dir / "secrets" / "dev-api-token").read_text().strip()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> ApiProcess:
        self.proc = ServiceProcess("services.api", self.env, self.log_path).start()
        self._ssl = None
        return self

    async def ready(self, timeout: float = 30.0) -> ApiProcess:
        async def probe() -> bool:
            assert self.proc is not None
            if not self.proc.alive():
                raise AssertionError(f"the API exited early:\n{self.log_text()[-3000:]}")
            if not self.ca_file.exists():
                return False
            try:
                r = await self.request("GET", "/healthz", token=None)
            except (aiohttp.ClientError, OSError, ssl.SSLError):
                return False
            return r.status == 200

        await eventually(probe, timeout=timeout, message="the API to answer /healthz")
        return self

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc else None

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.stop()

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = client_context(self.ca_file)
        return self._ssl

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "dev",
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if token == "dev":
            token = self.dev_token
        elif token == "admin":
            token = self.admin_token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json is not None:
            data = msgspec.json.encode(json)
            hdrs["Content-Type"] = "application/json"
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, self.url + path, data=data, headers=hdrs, ssl=self.ssl_context()
            ) as resp,
        ):
            text = await resp.text()
            try:
                body = msgspec.json.decode(text) if text else None
            except msgspec.DecodeError:
                body = None
            return Response(resp.status, body, text)

    async def create_tenant(self, name: str) -> tuple[str, str]:
        r = await self.request("POST", "/v1/tenants", token="admin", json={"name": name})
        assert r.status == 201, r.text
        return r.body["tenant_id"], r.body["token"]


def make_api(
    tmp_path: Path, nats_url: str, database_url: str, name: str = "api", **extra: str
) -> ApiProcess:
    data_dir = tmp_path / f"{name}-data"
    port = free_port()
    env = service_env(
        nats_url=nats_url,
        database_url=database_url,
        data_dir=data_dir,
        api_port=str(port),
        whip_public_url="https://127.0.0.1:9444",
        **extra,
    )
    return ApiProcess(data_dir=data_dir, env=env, log_path=tmp_path / f"{name}.log", port=port)


@pytest.fixture
async def api(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> AsyncIterator[ApiProcess]:
    proc = make_api(tmp_path, nats_server.url, database_url)
    proc.start()
    try:
        await proc.ready()
        yield proc
    finally:
        proc.stop()


@dataclass
class VaultProcess:
    proc: ServiceProcess
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
async def vault(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> AsyncIterator[VaultProcess]:
    """The real credential vault (``python -m services.credentials``)."""
    log_path = tmp_path / "vault.log"
    env = service_env(
        nats_url=nats_server.url, database_url=database_url, data_dir=tmp_path / "vault-data"
    )
    proc = ServiceProcess("services.credentials", env, log_path).start()
    nc = await nats.connect(nats_server.url)
    try:

        async def answers() -> bool:
            if not proc.alive():
                raise AssertionError(f"the vault exited:\n{log_path.read_text()[-3000:]}")
            try:
                msg = await nc.request(vault_rpc.SUBJECT_PUBLIC_KEY, b"", timeout=0.5)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                return False
            msgspec.json.decode(msg.data, type=vault_rpc.VaultKeyReply)
            return True

        await eventually(answers, message="the vault to answer")
        yield VaultProcess(proc=proc, log_path=log_path)
    finally:
        await nc.close()
        proc.stop()


@pytest.fixture
def uploader(tmp_path: Path, nats_server: NatsServer) -> Iterator[ServiceProcess]:
    """The real uploader (``python -m services.uploader``): it runs destination tests."""
    backup = tmp_path / "uploader-backup"
    backup.mkdir(exist_ok=True)
    env = service_env(
        nats_url=nats_server.url, data_dir=tmp_path / "uploader-data", backup_dir=backup
    )
    proc = ServiceProcess("services.uploader", env, tmp_path / "uploader.log").start()
    yield proc
    proc.stop()


def file_destination(tmp_path: Path) -> dict[str, Any]:
    return {"provider": "file", "config": {"path": str(tmp_path / "remote")}, "probe": False}


async def add_destination(
    api: ApiProcess, tmp_path: Path, name: str = "archive", token: str = "dev"
) -> dict[str, Any]:
    r = await api.request(
        "POST", "/v1/destinations", token=token, json={"name": name, **file_destination(tmp_path)}
    )
    assert r.status == 201, r.text
    assert isinstance(r.body, dict)
    return r.body


async def dev_tenant_id(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval("SELECT tenant_id FROM api.tenants WHERE name = 'dev'")
    finally:
        await conn.close()
    assert isinstance(value, str)
    return value


async def publish_all(js: Any, events: list[Event]) -> int:
    """Publish in order; the last stream sequence."""
    seq = 0
    for event in events:
        seq = (await publish(js, event)).seq
    return seq


async def db_fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def wait_offset(database_url: str, stream: str, seq: int, timeout: float = 30.0) -> None:
    async def reached() -> bool:
        rows = await db_fetch(
            database_url, "SELECT last_seq FROM api.projection_offsets WHERE stream = $1", stream
        )
        return bool(rows) and rows[0]["last_seq"] >= seq

    await eventually(reached, timeout=timeout, message=f"{stream} projected up to {seq}")


def iter_lines(text: str) -> Iterator[str]:
    yield from text.splitlines()
