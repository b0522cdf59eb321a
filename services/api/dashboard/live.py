"""Live rows: the read model announces every recording it folds, pages hear it over SSE.

A trigger on ``api.recordings`` sends ``NOTIFY api_recording_changed`` with the recording's id
and tenant (nothing else: no name, no file). Each API process keeps one listening connection and
fans the ids out to its open ``/ui/live`` streams, which send each browser the row as the page
would render it, for its own tenant only (operators: every tenant). Whichever API process folded
the event, every process hears it: PostgreSQL delivers the notification to all listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

log = logging.getLogger(__name__)

CHANNEL = "api_recording_changed"
SCHEMA = f"""
CREATE OR REPLACE FUNCTION api.recording_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.tenant_id || ' ' || NEW.recording_id);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS recording_changed ON api.recordings;
CREATE TRIGGER recording_changed AFTER INSERT OR UPDATE ON api.recordings
    FOR EACH ROW EXECUTE FUNCTION api.recording_changed();
"""
KEEPALIVE_S = 15.0  # a comment line now and then: proxies keep the stream open
QUEUE_SIZE = 256  # changes a slow browser may lag behind; older ones are dropped


class Broadcaster:
    """One LISTEN connection per process; subscribers get (tenant id, recording id)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._queues: set[asyncio.Queue[tuple[str, str] | None]] = set()

    async def start(self) -> None:
        # One connection of the pool, held for as long as the process runs.
        self._conn = await self._pool.acquire()
        await self._conn.add_listener(CHANNEL, self._on_notify)

    async def stop(self) -> None:
        for q in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.remove_listener(CHANNEL, self._on_notify)
                await self._pool.release(self._conn, timeout=2)
            self._conn = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        tenant_id, _, recording_id = payload.partition(" ")
        for q in list(self._queues):
            if q.full():  # a browser this far behind: drop its oldest change, keep the newest
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait((tenant_id, recording_id))

    def subscribe(self) -> asyncio.Queue[tuple[str, str] | None]:
        q: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, str] | None]) -> None:
        self._queues.discard(q)


RowOf = Callable[[str, str], Awaitable[dict[str, Any] | None]]


async def stream(
    request: web.Request,
    broadcaster: Broadcaster,
    allowed: Callable[[str], bool],
    row_of: RowOf,
) -> web.StreamResponse:
    """Server-sent events: ``event: recording`` with the row's JSON for each change the caller
    may see."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    q = broadcaster.subscribe()
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            try:
                item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if item is None:
                break
            tenant_id, recording_id = item
            if not allowed(tenant_id):
                continue
            row = await row_of(tenant_id, recording_id)
            if row is None:
                continue
            data = json.dumps(row, default=str, separators=(",", ":"))
            await response.write(f"event: recording\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        broadcaster.unsubscribe(q)
    return response
