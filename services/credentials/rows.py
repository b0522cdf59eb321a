"""Destination rows for grants, kept in memory until PostgreSQL says they changed.

A grant reads one destination row, and a row only changes when a key is rewrapped or the
destination is deleted. A trigger on ``vault.destinations`` NOTIFYs every such change, from
any process (another vault, ``resguardo keys rewrap``); the cache listens on its own connection
and drops the row. While that connection is down nothing is cached: every read goes to the
database. The row holds ciphertext and a wrapped key only, never a plaintext secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from . import store
from .bounded import Bounded

log = logging.getLogger(__name__)

RECONNECT_S = 1.0


class RowCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        capacity: int = 4096,
        reconnect_s: float = RECONNECT_S,
    ) -> None:
        self._pool = pool
        self._reconnect_s = reconnect_s
        self._url = database_url
        self._rows: Bounded[str, store.DestinationRow] = Bounded(capacity)
        self._listener: asyncpg.Connection | None = None
        # Bumped by every invalidation: a read that started before one must not be cached.
        self._generation = 0
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            await conn.add_listener(store.CHANGED_CHANNEL, self._on_change)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_lost)
        self._listener = conn

    async def stop(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        self._listener = None

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def cached(self, tenant_id: str, destination_id: str) -> store.DestinationRow | None:
        """The tenant's row if it is in memory (None says nothing: ask ``get``)."""
        row = self._rows.get(destination_id)
        return row if row is not None and row.tenant_id == tenant_id else None

    async def get(self, tenant_id: str, destination_id: str) -> store.DestinationRow | None:
        """The tenant's destination ``destination_id``, or None."""
        row = self._rows.get(destination_id)
        if row is not None:
            return row if row.tenant_id == tenant_id else None
        generation = self._generation
        row = await store.get_destination(self._pool, tenant_id, destination_id=destination_id)
        if row is not None and self.listening and generation == self._generation:
            self._rows.put(destination_id, row)
        return row

    def forget(self, destination_id: str) -> None:
        self._rows.pop(destination_id)
        self._generation += 1

    def _on_change(self, _conn: Any, _pid: int, _channel: str, destination_id: str) -> None:
        self.forget(destination_id)

    def _on_lost(self, _conn: Any) -> None:
        self._listener = None
        self._rows.clear()
        self._generation += 1
        if self._closing:
            return
        log.warning("lost the database notification connection; not caching until it is back")
        self._reconnect = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._reconnect_s)  # a database that is restarting needs a moment
            try:
                await self.start()
                log.info("database notifications back; caching destination rows again")
                return
            except Exception as exc:  # any failure: try again; uncached reads stay correct
                log.debug("still no notification connection", extra={"error": type(exc).__name__})
