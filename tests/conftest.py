"""Fixtures that start real servers: nats-server (JetStream), PostgreSQL (pgserver), moto S3."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared import natsio
from shared.embedded import NatsServer, Postgres

from .servers import MotoS3, moto_s3


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    log = (tmp_path / "nats-server.log").open("wb")
    server = NatsServer(tmp_path / "nats", log=log).start()
    try:
        yield server
    finally:
        server.stop()
        log.close()


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await natsio.connect(nats_server.url, name="test")
    jsc = nc.jetstream()
    await natsio.ensure_streams(jsc)
    yield jsc
    await nc.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    # Not under pytest's own temp root: every new pytest session resets that folder to 0700,
    # which would lock PostgreSQL's system user (as root) out of a server already running.
    base = Path(tempfile.mkdtemp(prefix="resguardo-test-pg-"))
    try:
        with (base / "postgres.log").open("ab") as log:
            pg = Postgres(base / "data", log=log).start()
            yield pg
            pg.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


_db_counter = itertools.count()


@pytest.fixture
async def database_url(postgres_server: Postgres) -> AsyncIterator[str]:
    """A fresh, empty database on the shared server, for one test."""
    name = f"t{next(_db_counter)}_{id(postgres_server) % 10000}"
    admin = await asyncpg.connect(postgres_server.url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, _, query = postgres_server.url.partition("?")
    yield base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server
