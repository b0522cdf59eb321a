"""The vault's cache of destination rows drops a row as soon as PostgreSQL announces a change,
whoever made it, and caches nothing while it cannot hear those announcements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from services.credentials import store
from services.credentials.rows import RowCache
from shared.ids import new_destination_id, new_tenant_id


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await store.connect(database_url)
    await store.create_schema(p)
    yield p
    await p.close()


@pytest.fixture
async def cache(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[RowCache]:
    c = RowCache(pool, database_url, reconnect_s=0.5)
    await c.start()
    yield c
    await c.stop()


async def _add(pool: asyncpg.Pool, tenant: str) -> store.DestinationRow:
    return await store.insert_destination(
        pool,
        store.DestinationRow(
            destination_id=new_destination_id(),
            tenant_id=tenant,
            name="rows",
            provider="file",
            public_config={"path": "/tmp/x"},
            secret_fields=[],
            ciphertext=b"c" * 48,
            wrapped_key=b"w" * 72,
            key_version=1,
            fingerprint="f",
            created_at=datetime.now(UTC),
        ),
    )


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


async def _sql(database_url: str, query: str, *args: object) -> None:
    """A change made by another process (another vault, `resguardo keys rewrap`)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


async def test_a_rewrapped_or_deleted_row_is_dropped(
    cache: RowCache, pool: asyncpg.Pool, database_url: str
) -> None:
    tenant = new_tenant_id()
    row = await _add(pool, tenant)
    first = await cache.get(tenant, row.destination_id)
    assert first is not None and first.key_version == 1
    assert await cache.get(new_tenant_id(), row.destination_id) is None  # cached, still tenant's

    await _sql(
        database_url,
        "UPDATE vault.destinations SET wrapped_key = $1, key_version = 2 WHERE destination_id = $2",
        b"n" * 72,
        row.destination_id,
    )

    async def rewrapped() -> bool:
        got = await cache.get(tenant, row.destination_id)
        return got is not None and got.key_version == 2 and got.wrapped_key == b"n" * 72

    await _eventually(rewrapped)

    await _sql(
        database_url, "DELETE FROM vault.destinations WHERE destination_id = $1", row.destination_id
    )

    async def gone() -> bool:
        return await cache.get(tenant, row.destination_id) is None

    await _eventually(gone)


async def test_nothing_is_cached_while_notifications_cannot_be_heard(
    cache: RowCache, pool: asyncpg.Pool, database_url: str
) -> None:
    tenant = new_tenant_id()
    row = await _add(pool, tenant)
    assert await cache.get(tenant, row.destination_id) is not None
    await _sql(
        database_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN %' AND datname = current_database() AND pid <> pg_backend_pid()",
    )

    async def deaf() -> bool:
        return not cache.listening

    await _eventually(deaf)
    # A change made now is not announced to the cache: it must read the database each time.
    await _sql(
        database_url,
        "UPDATE vault.destinations SET key_version = 3 WHERE destination_id = $1",
        row.destination_id,
    )
    assert not cache.listening  # still within the pause before reconnecting
    got = await cache.get(tenant, row.destination_id)
    assert got is not None and got.key_version == 3

    async def listening_again() -> bool:
        return cache.listening

    await _eventually(listening_again)
    await _sql(
        database_url,
        "UPDATE vault.destinations SET key_version = 4 WHERE destination_id = $1",
        row.destination_id,
    )

    async def fresh() -> bool:
        got = await cache.get(tenant, row.destination_id)
        return got is not None and got.key_version == 4

    await _eventually(fresh)


async def test_cached_is_memory_only_and_the_tenants_own(
    pool: asyncpg.Pool, cache: RowCache
) -> None:
    """The grant's fast path: a cached row only after a read, only for its own tenant, and gone
    once the row changes."""
    tenant = new_tenant_id()
    row = await _add(pool, tenant)
    assert cache.cached(tenant, row.destination_id) is None  # never read: not in memory
    assert await cache.get(tenant, row.destination_id) is not None
    assert cache.cached(tenant, row.destination_id) is not None
    assert cache.cached(new_tenant_id(), row.destination_id) is None
    await store.delete_destination(pool, tenant, destination_id=row.destination_id)

    async def dropped() -> bool:
        return cache.cached(tenant, row.destination_id) is None

    await _eventually(dropped)
