"""Fixtures for the transcoder: the service as a real process against a real nats-server, and a
real vault (on a fresh PostgreSQL database) that issues each recording's data key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared import natsio
from shared.embedded import NatsServer
from shared.events import transcodes as tx
from shared.ids import new_recording_id, new_tenant_id
from shared.recording_key import fetch_recording_key

from ..credentials.helpers import publish_started, start_vault, wait_ready
from ..servers import ServiceProcess, service_env
from .capture_factory import Capture, ParticipantSpec, make_capture


@dataclass
class Vault:
    """The real vault; ``capture`` writes a recording the way the proxy would: started, then
    its segments encrypted under the key the vault issues for it."""

    nc: NATS
    proc: ServiceProcess

    async def start_recording(
        self,
        js: JetStreamContext,
        recording_id: str | None = None,
        tenant_id: str | None = None,
        **started: Any,
    ) -> tuple[str, str, bytes]:
        rid, tenant = recording_id or new_recording_id(), tenant_id or new_tenant_id()
        await publish_started(js, rid, tenant, "dst_0123456789abcdef", name="archive", **started)
        key = await fetch_recording_key(
            self.nc, recording_id=rid, tenant_id=tenant, purpose="capture", service="proxy"
        )
        try:
            return rid, tenant, bytes(key.data_key)
        finally:
            key.wipe()

    async def capture(
        self,
        js: JetStreamContext,
        backup_root: Path,
        participants: Iterable[ParticipantSpec],
        *,
        started: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Capture:
        rid, tenant, key = await self.start_recording(js, **(started or {}))
        return make_capture(
            backup_root, participants, recording_id=rid, tenant_id=tenant, key=key, **kwargs
        )


@pytest.fixture
async def vault(nats_server: NatsServer, tmp_path: Path, database_url: str) -> AsyncIterator[Vault]:
    proc = start_vault(tmp_path, nats_server.url, database_url)
    nc = await natsio.connect(nats_server.url, name="test-vault-client")
    try:
        await wait_ready(nc, proc)
        yield Vault(nc, proc)
    finally:
        await nc.close()
        proc.stop()


@dataclass
class Transcoders:
    """Starts transcoder processes on one backup folder; stops them all at teardown."""

    nats_url: str
    data_dir: Path
    backup_root: Path
    log_path: Path
    procs: list[ServiceProcess] = field(default_factory=list)

    def start(self, **settings: Any) -> ServiceProcess:
        env = service_env(
            nats_url=self.nats_url,
            data_dir=self.data_dir,
            backup_dir=self.backup_root,
            transcoder_ack_wait_s=settings.pop("ack_wait_s", 5),
            transcoder_retry_delay_s=settings.pop("retry_delay_s", 0.5),
            **{f"transcoder_{k}": v for k, v in settings.items()},
        )
        proc = ServiceProcess("services.transcoder", env, self.log_path).start()
        self.procs.append(proc)
        return proc

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture
def backup_root(tmp_path: Path) -> Path:
    root = tmp_path / "backup"
    root.mkdir()
    return root


@pytest.fixture
def transcoders(
    nats_server: NatsServer, tmp_path: Path, backup_root: Path, vault: Vault
) -> Iterator[Transcoders]:
    # Every transcoder needs the vault: it asks for each recording's key.
    t = Transcoders(nats_server.url, tmp_path / "data", backup_root, tmp_path / "transcoder.log")
    yield t
    for proc in t.procs:
        proc.stop()


async def wait_event(
    js: JetStreamContext,
    kind: str,
    recording_id: str,
    *,
    timeout: float = 60.0,
    explain: Callable[[], str] = lambda: "",
) -> Any:
    """The ``transcodes.<rid>.<kind>`` event once it exists; fails naming what else happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    subject = tx.STREAM.filter(kind, recording_id)
    while loop.time() < deadline:
        event = await natsio.last_event(js, tx.STREAM, subject)
        if event is not None:
            return event
        await asyncio.sleep(0.1)
    others = await natsio.read_subject(js, tx.STREAM, tx.STREAM.filter(">", recording_id))
    raise AssertionError(
        f"no {kind} event for {recording_id} within {timeout:.0f} s; transcodes seen: "
        f"{[e for _, e in others]}\n{explain()}"
    )
