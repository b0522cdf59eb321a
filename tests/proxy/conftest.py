"""Fixtures for the proxy: the proxy as a real process, recordings started/stopped on NATS."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.js import JetStreamContext

from shared import natsio
from shared.embedded import NatsServer, free_port, wait_for_port
from shared.events import AnyEvent, captures, event_id, now, recordings
from shared.ids import new_recording_id, new_tenant_id
from shared.recording_key import fetch_recording_key
from shared.tls import client_context

from ..credentials.helpers import publish_started, start_ready_vault
from ..servers import ServiceProcess, service_env


@pytest.fixture(autouse=True)
def vault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """A real vault for every test with a NATS server: the proxy asks it for each recording's
    data key (segments are written encrypted)."""
    if "nats_server" not in request.fixturenames:
        yield
        return
    nats_server: NatsServer = request.getfixturevalue("nats_server")
    database_url: str = request.getfixturevalue("database_url")
    proc = start_ready_vault(tmp_path, nats_server.url, database_url)
    try:
        yield
    finally:
        proc.stop()


@dataclass
class Recording:
    rid: str
    tenant_id: str
    token: str


@dataclass
class Proxy:
    process: ServiceProcess
    port: int
    data_dir: Path
    backup_root: Path

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def whip_url(self, rid: str) -> str:
        return f"{self.base_url}/whip/{rid}"

    def rec_dir(self, rec: Recording) -> Path:
        return self.backup_root / rec.tenant_id / rec.rid

    async def start(self) -> None:
        self.process.start()
        await asyncio.to_thread(wait_for_port, "127.0.0.1", self.port, 30.0)

    def http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(self.ca_file))
        )

    async def health(self) -> dict[str, Any]:
        async with self.http() as http, http.get(f"{self.base_url}/healthz") as resp:
            assert resp.status == 200
            return dict(await resp.json())


def make_proxy(tmp_path: Path, nats_server: NatsServer, **settings: str) -> Proxy:
    port = free_port()
    data_dir = tmp_path / "data"
    env = service_env(
        nats_url=nats_server.url,
        data_dir=data_dir,
        whip_port=port,
        **({"segment_seconds": "1.0", "log_level": "INFO"} | settings),
    )
    return Proxy(
        ServiceProcess("services.proxy", env, tmp_path / "proxy.log"),
        port,
        data_dir,
        (data_dir / "backup").resolve(),
    )


@pytest.fixture
async def proxy(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Proxy]:
    p = make_proxy(tmp_path, nats_server)
    await p.start()
    try:
        yield p
    finally:
        p.process.stop()


async def start_recording(js: JetStreamContext) -> Recording:
    rid, tenant, token = new_recording_id(), new_tenant_id(), secrets.token_urlsafe(32)
    await publish_started(
        js,
        rid,
        tenant,
        "dst_0123456789abcdef",
        name="test",
        whip_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
    )
    return Recording(rid, tenant, token)


async def recording_key(js: JetStreamContext, rec: Recording) -> bytearray:
    """The recording's data key, asked of the vault as a reader would (to check files)."""
    key = await fetch_recording_key(
        js._nc, recording_id=rec.rid, tenant_id=rec.tenant_id, purpose="transcode", service="test"
    )
    return bytearray(key.data_key)


async def stop_recording(js: JetStreamContext, rec: Recording) -> None:
    await natsio.publish(
        js,
        recordings.RecordingStopRequested(
            event_id=event_id(rec.rid, "stop"),
            recording_id=rec.rid,
            tenant_id=rec.tenant_id,
            occurred_at=now(),
        ),
    )


async def wait_for_event(js: JetStreamContext, subject: str, timeout: float = 30.0) -> AnyEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = await natsio.last_event(js, captures.STREAM, subject)
        if event is not None:
            return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no event on {subject} within {timeout:.0f} s")


async def history(js: JetStreamContext, rid: str) -> list[AnyEvent]:
    return [e for _, e in await natsio.read_subject(js, captures.STREAM, f"captures.{rid}.>")]


async def wait_for_count(
    js: JetStreamContext, rid: str, cls: type, count: int = 1, timeout: float = 30.0
) -> list[AnyEvent]:
    """The recording's capture history once it holds ``count`` events of type ``cls``.

    (Folds the history rather than asking for the last message on one subject: events whose
    struct has a ``kind`` field land on ``captures.<rid>.<audio|video>``, see the report.)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await history(js, rid)
        if sum(isinstance(e, cls) for e in events) >= count:
            return events
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {count} {cls.__name__} events within {timeout:.0f} s")


async def consumer_drained(
    js: JetStreamContext, stream: str, durable: str, timeout: float = 30.0
) -> None:
    """Wait until a durable consumer has handled (acked) everything in its stream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(stream, durable)
        if not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"consumer {durable} still has work after {timeout:.0f} s")
