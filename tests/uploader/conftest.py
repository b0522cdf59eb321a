from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from shared.embedded import NatsServer
from tests.credentials.conftest import client, nc, vault_proc
from tests.credentials.helpers import VaultClient, start_vault, wait_ready
from tests.servers import ServiceProcess

from .support import start_uploader


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


__all__ = ["client", "nc", "vault_proc"]  # the vault's own fixtures, shared
