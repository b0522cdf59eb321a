from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from shared import natsio
from shared.embedded import NatsServer
from tests.servers import ServiceProcess

from .helpers import VaultClient, start_vault, wait_ready


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await natsio.connect(nats_server.url, name="test-client")
    yield conn
    await conn.close()


@pytest.fixture
def vault_proc(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> Iterator[ServiceProcess]:
    proc = start_vault(tmp_path, nats_server.url, database_url)
    yield proc
    proc.stop()


@pytest.fixture
async def client(nc: NATS, vault_proc: ServiceProcess) -> VaultClient:
    await wait_ready(nc, vault_proc)
    return VaultClient(nc)
