"""PostgreSQL: the API's schema (``api``), its read model and its tenants and tokens.

The read model is written only through ``apply_event`` (one event, one transaction) so replays
are no-ops: an event row is keyed by (stream, seq), and the per-stream offset moves in the same
transaction as the rows it covers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from shared.events import webhooks
from shared.events.base import Event

from . import audit_log, deliveries, usage
from .auth import schema as auth_schema
from .dashboard import live
from .projection import RecordingView, apply, event_type, summarize
from .roles import Principal

log = logging.getLogger(__name__)

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS api;
CREATE TABLE IF NOT EXISTS api.tenants (
    tenant_id  text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api.tokens (
    token_sha256 text PRIMARY KEY,
    role         text NOT NULL CHECK (role IN ('admin', 'tenant')),
    tenant_id    text REFERENCES api.tenants (tenant_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'admin') = (tenant_id IS NULL))
);
CREATE TABLE IF NOT EXISTS api.recordings (
    recording_id text PRIMARY KEY,
    tenant_id    text NOT NULL,
    state        text NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    view         jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_by_tenant ON api.recordings (tenant_id, created_at DESC);
CREATE INDEX IF NOT EXISTS recordings_by_state ON api.recordings (state);
CREATE TABLE IF NOT EXISTS api.recording_events (
    stream       text NOT NULL,
    seq          bigint NOT NULL,
    recording_id text NOT NULL,
    tenant_id    text NOT NULL,
    type         text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    summary      jsonb NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE INDEX IF NOT EXISTS recording_events_by_recording
    ON api.recording_events (recording_id, occurred_at);
CREATE TABLE IF NOT EXISTS api.projection_offsets (
    stream   text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0
);
"""

_view_decoder = msgspec.json.Decoder(RecordingView)
_encoder = msgspec.json.Encoder()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb as text both ways: msgspec does the (de)serialising.
    await conn.set_type_codec("jsonb", encoder=str, decoder=str, schema="pg_catalog")


async def connect(url: str, *, timeout: float = 30.0) -> asyncpg.Pool:
    """A pool, retrying while the server comes up (``resguardo up`` starts it alongside us)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=10, init=_init_connection)
            assert pool is not None
            return pool
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def migrate(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # Two API processes starting together must not race on CREATE ... IF NOT EXISTS.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('resguardo.api.schema'))")
        await conn.execute(SCHEMA)
        await conn.execute(deliveries.SCHEMA)
        await conn.execute(audit_log.SCHEMA)
        await conn.execute(usage.SCHEMA)  # tenants' backup capacity
        await auth_schema.migrate(conn)  # users, sign-in links, sessions
        await conn.execute(live.SCHEMA)  # the dashboard's live rows


# --- read model -------------------------------------------------------------------------------


async def _lock_recording(conn: asyncpg.Connection, recording_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", recording_id)


async def _apply_in_tx(conn: asyncpg.Connection, stream: str, seq: int, event: Event) -> bool:
    """Inside a transaction: record the event and fold it into its recording. False if it was
    already there (a replay)."""
    await _lock_recording(conn, event.recording_id)
    inserted = await conn.fetchval(
        """INSERT INTO api.recording_events
               (stream, seq, recording_id, tenant_id, type, occurred_at, summary)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (stream, seq) DO NOTHING
           RETURNING true""",
        stream,
        seq,
        event.recording_id,
        event.tenant_id,
        event_type(event),
        event.occurred_at,
        _encoder.encode(summarize(event)).decode(),
    )
    if not inserted:
        return False
    row = await conn.fetchrow(
        "SELECT tenant_id, view FROM api.recordings WHERE recording_id = $1", event.recording_id
    )
    current = _view_decoder.decode(row["view"]) if row else None
    if current is not None and current.tenant_id != event.tenant_id:
        log.warning(
            "event names another tenant than its recording; not folded",
            extra={"recording_id": event.recording_id, "stream": stream, "seq": seq},
        )
        return True
    view = apply(current, event)
    await conn.execute(
        """INSERT INTO api.recordings (recording_id, tenant_id, state, created_at, updated_at, view)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (recording_id) DO UPDATE SET state = EXCLUDED.state,
               created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
               view = EXCLUDED.view""",
        view.recording_id,
        view.tenant_id,
        view.state,
        view.created_at,
        view.updated_at,
        _encoder.encode(view).decode(),
    )
    return True


async def apply_event(pool: asyncpg.Pool, stream: str, seq: int, event: Event | None) -> bool:
    """The projector's step: fold ``event`` (stream sequence ``seq``) and move the stream's offset,
    in one transaction. ``event=None`` (undecodable) only moves the offset. Returns False when
    ``seq`` was already applied. WEBHOOKS events fold into ``api.webhook_deliveries`` only
    (``deliveries``): a delivery is no step of its recording's life."""
    async with pool.acquire() as conn, conn.transaction():
        last = await conn.fetchval(
            "SELECT last_seq FROM api.projection_offsets WHERE stream = $1 FOR UPDATE", stream
        )
        if last is None:
            await conn.execute(
                "INSERT INTO api.projection_offsets (stream, last_seq) VALUES ($1, 0) "
                "ON CONFLICT DO NOTHING",
                stream,
            )
            last = await conn.fetchval(
                "SELECT last_seq FROM api.projection_offsets WHERE stream = $1 FOR UPDATE", stream
            )
        if seq <= last:
            return False
        if isinstance(event, webhooks.EVENTS):
            await deliveries.apply_in_tx(conn, event)
        elif event is not None:
            await _apply_in_tx(conn, stream, seq, event)
        await conn.execute(
            "UPDATE api.projection_offsets SET last_seq = $2 WHERE stream = $1", stream, seq
        )
        return True


async def apply_published(pool: asyncpg.Pool, stream: str, seq: int, event: Event) -> None:
    """Fold an event the API itself just published, so the caller reads its own write. The
    offset is left to the projector, which finds the row already there and skips it."""
    async with pool.acquire() as conn, conn.transaction():
        await _apply_in_tx(conn, stream, seq, event)


async def offsets(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT stream, last_seq FROM api.projection_offsets")
    return {r["stream"]: int(r["last_seq"]) for r in rows}


async def offset(pool: asyncpg.Pool, stream: str) -> int:
    value = await pool.fetchval(
        "SELECT last_seq FROM api.projection_offsets WHERE stream = $1", stream
    )
    return int(value or 0)


async def get_recording(
    pool: asyncpg.Pool, tenant_id: str, recording_id: str
) -> RecordingView | None:
    raw = await pool.fetchval(
        "SELECT view FROM api.recordings WHERE recording_id = $1 AND tenant_id = $2",
        recording_id,
        tenant_id,
    )
    return _view_decoder.decode(raw) if raw else None


async def list_recordings(
    pool: asyncpg.Pool, tenant_id: str, *, limit: int, state: str | None = None
) -> list[RecordingView]:
    rows = await pool.fetch(
        """SELECT view FROM api.recordings
           WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
           ORDER BY created_at DESC, recording_id DESC LIMIT $3""",
        tenant_id,
        state,
        limit,
    )
    return [_view_decoder.decode(r["view"]) for r in rows]


async def recording_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """How many recordings are in each state (states with none are absent)."""
    rows = await pool.fetch("SELECT state, count(*) AS n FROM api.recordings GROUP BY state")
    return {r["state"]: int(r["n"]) for r in rows}


async def retained_backup_bytes(pool: asyncpg.Pool) -> int:
    """Bytes the backups of retained recordings hold, as the read model knows them: their capture
    segments (the last event of each track's segment, so a re-published one counts once) plus
    their sealed files."""
    value = await pool.fetchval(
        """SELECT
             coalesce((SELECT sum(size) FROM (
                 SELECT DISTINCT ON (e.recording_id, e.summary->>'track_id', e.summary->>'seq')
                        (e.summary->>'size')::bigint AS size
                 FROM api.recording_events e
                 JOIN api.recordings r ON r.recording_id = e.recording_id
                 WHERE r.state = 'retained' AND e.type = 'capture.segment_written'
                 ORDER BY e.recording_id, e.summary->>'track_id', e.summary->>'seq',
                          e.stream, e.seq DESC) segments), 0)
           + coalesce((SELECT sum((f->>'size')::bigint)
                 FROM api.recordings r, jsonb_array_elements(r.view->'files') f
                 WHERE r.state = 'retained'), 0)"""
    )
    return int(value or 0)


@dataclass(frozen=True)
class EventRow:
    stream: str
    seq: int
    type: str
    occurred_at: Any
    summary: dict[str, Any]


async def recording_events(
    pool: asyncpg.Pool, tenant_id: str, recording_id: str, *, limit: int
) -> tuple[list[EventRow], int]:
    """The newest ``limit`` events of a recording, oldest first, and how many there are."""
    total = await pool.fetchval(
        "SELECT count(*) FROM api.recording_events WHERE recording_id = $1 AND tenant_id = $2",
        recording_id,
        tenant_id,
    )
    rows = await pool.fetch(
        """SELECT * FROM (
               SELECT stream, seq, type, occurred_at, summary FROM api.recording_events
               WHERE recording_id = $1 AND tenant_id = $2
               ORDER BY occurred_at DESC, stream DESC, seq DESC LIMIT $3) newest
           ORDER BY occurred_at, stream, seq""",
        recording_id,
        tenant_id,
        limit,
    )
    return [
        EventRow(
            stream=r["stream"],
            seq=int(r["seq"]),
            type=r["type"],
            occurred_at=r["occurred_at"],
            summary=msgspec.json.decode(r["summary"]),
        )
        for r in rows
    ], int(total)


# --- tenants and tokens -----------------------------------------------------------------------


async def principal(pool: asyncpg.Pool, token_sha256: str) -> Principal | None:
    row = await pool.fetchrow(
        "SELECT role, tenant_id FROM api.tokens WHERE token_sha256 = $1", token_sha256
    )
    return Principal(role=row["role"], tenant_id=row["tenant_id"]) if row else None


async def tenant_by_name(pool: asyncpg.Pool | asyncpg.Connection, name: str) -> str | None:
    value = await pool.fetchval("SELECT tenant_id FROM api.tenants WHERE name = $1", name)
    return str(value) if value else None


async def create_tenant(pool: asyncpg.Pool, tenant_id: str, name: str, token_sha256: str) -> bool:
    """Create a tenant with its first token; False if the name is taken."""
    async with pool.acquire() as conn, conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO api.tenants (tenant_id, name) VALUES ($1, $2) "
            "ON CONFLICT (name) DO NOTHING RETURNING true",
            tenant_id,
            name,
        )
        if not created:
            return False
        await conn.execute(
            "INSERT INTO api.tokens (token_sha256, role, tenant_id) VALUES ($1, 'tenant', $2)",
            token_sha256,
            tenant_id,
        )
        return True


async def ensure_token(
    conn: asyncpg.Connection, token_sha256: str, role: str, tenant_id: str | None
) -> None:
    await conn.execute(
        "INSERT INTO api.tokens (token_sha256, role, tenant_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (token_sha256) DO NOTHING",
        token_sha256,
        role,
        tenant_id,
    )


async def ensure_tenant(conn: asyncpg.Connection, name: str, new_id: str) -> str:
    await conn.execute(
        "INSERT INTO api.tenants (tenant_id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        new_id,
        name,
    )
    tenant_id = await tenant_by_name(conn, name)
    assert tenant_id is not None
    return tenant_id
