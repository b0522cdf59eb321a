"""What the pages show, read from the API's read model with the API's own queries (``listing``
for the recordings tables, ``usage``, ``audit``) plus a recording's events. Every query names the
tenant (``None``: an operator's view of every tenant)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from .. import listing
from ..projection import RecordingView
from ..query import encode_cursor

_view = msgspec.json.Decoder(RecordingView)
PAGE = 25


def display(row: listing.Row) -> dict[str, Any]:
    """One line of a recordings table, as the page shows it (and the live stream sends it)."""
    view = row.view
    retained = row.fields()["retained"]
    return {
        "recording_id": view.recording_id,
        "tenant_id": view.tenant_id,
        "label": view.label,
        "state": view.state,
        "destination": view.destination,
        "started": view.created_at.isoformat(timespec="seconds"),
        "duration": duration_text(row.duration_s),
        "size": size_text(row.size_bytes),
        "reason": retained["reason"] if retained else "",
        "since": retained["since"].isoformat(timespec="seconds") if retained else "",
    }


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def size_text(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


async def recordings(
    pool: asyncpg.Pool, filters: listing.Filters, limit: int = PAGE
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of rows (the API's own listing), and the cursor of the next page (None: last)."""
    rows, more = await listing.page(pool, filters, limit)
    cursor = encode_cursor(rows[-1].view.created_at, rows[-1].view.recording_id) if more else None
    return [display(r) for r in rows], cursor


async def row(pool: asyncpg.Pool, tenant_id: str, recording_id: str) -> dict[str, Any] | None:
    view = await one(pool, tenant_id, recording_id)
    return display(await listing.one(pool, view)) if view is not None else None


async def one(pool: asyncpg.Pool, tenant_id: str | None, recording_id: str) -> RecordingView | None:
    raw = await pool.fetchval(
        """SELECT view FROM api.recordings
           WHERE recording_id = $1 AND ($2::text IS NULL OR tenant_id = $2)""",
        recording_id,
        tenant_id,
    )
    return _view.decode(raw) if raw else None


@dataclass(frozen=True)
class Event:
    at: datetime
    type: str
    summary: dict[str, Any]


async def events(pool: asyncpg.Pool, tenant_id: str | None, recording_id: str) -> list[Event]:
    rows = await pool.fetch(
        """SELECT occurred_at, type, summary FROM api.recording_events
           WHERE recording_id = $1 AND ($2::text IS NULL OR tenant_id = $2)
           ORDER BY occurred_at, stream, seq LIMIT 1000""",
        recording_id,
        tenant_id,
    )
    return [Event(r["occurred_at"], r["type"], msgspec.json.decode(r["summary"])) for r in rows]


async def destinations_in_use(pool: asyncpg.Pool, tenant_id: str | None) -> list[str]:
    rows = await pool.fetch(
        """SELECT DISTINCT view->>'destination' AS d FROM api.recordings
           WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY 1""",
        tenant_id,
    )
    return [r["d"] for r in rows if r["d"]]
