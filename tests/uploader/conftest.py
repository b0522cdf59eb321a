from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from shared import natsio
from shared.embedded import NatsServer
from tests.credentials.helpers import VaultClient, start_vault, wait_ready
from tests.servers import ServiceProcess

from .support import start_uploader


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await natsio.connect(nats_server.url, name="test-client")
    yield conn
    await conn.close()


@pytest.fixture
async def vault(
    tmp_path: Path, nats_server: NatsServer, database_url: str, nc: NATS
) -> AsyncIterator[VaultClient]:
    proc = start_vault(tmp_path, nats_server.url, database_url)
    try:
        await wait_ready(nc, proc)
        yield VaultClient(nc)
    finally:
        proc.stop()


@pytest.fixture
def backup_root(tmp_path: Path) -> Path:
    root = tmp_path / "backup"
    root.mkdir()
    return root.resolve()


@pytest.fixture
def uploader(
    tmp_path: Path, nats_server: NatsServer, backup_root: Path
) -> Iterator[ServiceProcess]:
    proc = start_uploader(tmp_path, nats_server.url, backup_root)
    yield proc
    proc.stop()


@pytest.fixture
def vault_proc(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> Iterator[ServiceProcess]:
    """The vault as a process of its own, for tests that read its log (``client`` talks to it)."""
    proc = start_vault(tmp_path, nats_server.url, database_url)
    yield proc
    proc.stop()


@pytest.fixture
async def client(nc: NATS, vault_proc: ServiceProcess) -> VaultClient:
    await wait_ready(nc, vault_proc)
    return VaultClient(nc)
