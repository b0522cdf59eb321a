from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared import natsio
from shared.embedded import NatsServer
from tests.credentials.helpers import start_vault, wait_ready
from tests.servers import ServiceProcess

from .support import start_notifier


@dataclass
class System:
    """NATS, a vault, and a way to start notifiers; what a delivery test needs."""

    tmp: Path
    nats_url: str
    nc: NATS
    js: JetStreamContext
    vault: ServiceProcess
    vault_key: bytes
    notifiers: list[ServiceProcess]
    database_url: str = ""

    def notifier(self, name: str = "notifier", **extra: str) -> ServiceProcess:
        proc = start_notifier(self.tmp, self.nats_url, name, **extra)
        self.notifiers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            p.log_path.read_text(errors="replace")[-4000:] for p in [self.vault, *self.notifiers]
        )


@pytest.fixture
async def system(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> AsyncIterator[System]:
    nc = await natsio.connect(nats_server.url, name="test-client")
    js = nc.jetstream()
    await natsio.ensure_streams(js)
    vault = start_vault(tmp_path, nats_server.url, database_url)
    sys = System(tmp_path, nats_server.url, nc, js, vault, b"", [], database_url)
    try:
        sys.vault_key = await wait_ready(nc, vault)
        yield sys
    finally:
        for proc in sys.notifiers:
            proc.stop()
        vault.stop()
        await nc.close()
