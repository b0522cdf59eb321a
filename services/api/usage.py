"""Backup usage per tenant: the bytes its backups hold, day by day, against its capacity.

What a recording's backup holds is read from its events in the read model, as ``metrics``
does for retained ones: its capture segments (``capture.segment_written``, each segment once)
and its sealed files (``transcode.sealed``), until its backup is purged
(``upload.backup_purged``), after which it holds nothing. A day's figure is what was held at the
end of that day (UTC); today's is what is held now.

Capacity is ``RESGUARDO_BACKUP_CAPACITY_BYTES`` unless the tenant has its own
(``api.tenants.backup_capacity_bytes``). It only ever warns (80%: warning, 100%: full): nothing
refuses a recording, an upload or a retry over it, so a call is never lost over a quota.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import asyncpg

SCHEMA = """
ALTER TABLE api.tenants ADD COLUMN IF NOT EXISTS backup_capacity_bytes bigint
    CHECK (backup_capacity_bytes > 0);
CREATE INDEX IF NOT EXISTS recording_events_by_type
    ON api.recording_events (type, tenant_id, occurred_at);
"""

WARNING_PERCENT = 80.0
FULL_PERCENT = 100.0
Level = Literal["ok", "warning", "full"]


def level_of(percent: float) -> Level:
    if percent >= FULL_PERCENT:
        return "full"
    if percent >= WARNING_PERCENT:
        return "warning"
    return "ok"


def percent_of(held: int, capacity: int) -> float:
    return round(100.0 * held / capacity, 2) if capacity > 0 else 0.0


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    capacity_override: int | None  # None: the default


@dataclass(frozen=True)
class TenantUsage:
    tenant: Tenant
    capacity_bytes: int
    series: list[tuple[date, int]]  # oldest first; the last day is today

    @property
    def held_bytes(self) -> int:
        return self.series[-1][1] if self.series else 0

    @property
    def percent(self) -> float:
        return percent_of(self.held_bytes, self.capacity_bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant.tenant_id,
            "name": self.tenant.name,
            "held_bytes": self.held_bytes,
            "capacity_bytes": self.capacity_bytes,
            "capacity_source": "default" if self.tenant.capacity_override is None else "tenant",
            "percent": self.percent,
            "level": level_of(self.percent),
            "series": [
                {
                    "date": day.isoformat(),
                    "held_bytes": held,
                    "percent": percent_of(held, self.capacity_bytes),
                }
                for day, held in self.series
            ],
        }


async def tenants(pool: asyncpg.Pool, tenant_id: str | None) -> list[Tenant]:
    rows = await pool.fetch(
        """SELECT tenant_id, name, backup_capacity_bytes FROM api.tenants
           WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY name""",
        tenant_id,
    )
    return [Tenant(r["tenant_id"], r["name"], r["backup_capacity_bytes"]) for r in rows]


async def set_capacity(pool: asyncpg.Pool, tenant_id: str, capacity: int | None) -> Tenant | None:
    """Set (or with None, clear) a tenant's own capacity; None if there is no such tenant."""
    row = await pool.fetchrow(
        """UPDATE api.tenants SET backup_capacity_bytes = $2 WHERE tenant_id = $1
           RETURNING tenant_id, name, backup_capacity_bytes""",
        tenant_id,
        capacity,
    )
    return Tenant(row["tenant_id"], row["name"], row["backup_capacity_bytes"]) if row else None


async def held_by_day(
    pool: asyncpg.Pool, tenant_id: str | None, first: date, last: date
) -> dict[str, dict[date, int]]:
    """Per tenant, the bytes held at the end of each day from ``first`` to ``last`` (UTC);
    days without any are absent."""
    rows = await pool.fetch(
        """WITH segment AS (
               SELECT DISTINCT ON (recording_id, summary->>'track_id', summary->>'seq')
                      tenant_id, recording_id, occurred_at AS at,
                      (summary->>'size')::bigint AS size
               FROM api.recording_events
               WHERE type = 'capture.segment_written' AND ($1::text IS NULL OR tenant_id = $1)
               ORDER BY recording_id, summary->>'track_id', summary->>'seq', stream, seq DESC
           ), sealed AS (
               SELECT DISTINCT ON (recording_id) tenant_id, recording_id, occurred_at AS at,
                      (SELECT coalesce(sum((f->>'size')::bigint), 0)
                       FROM jsonb_array_elements(summary->'files') f) AS size
               FROM api.recording_events
               WHERE type = 'transcode.sealed' AND ($1::text IS NULL OR tenant_id = $1)
               ORDER BY recording_id, occurred_at, stream, seq
           ), purged AS (
               SELECT recording_id, min(occurred_at) AS at FROM api.recording_events
               WHERE type = 'upload.backup_purged' AND ($1::text IS NULL OR tenant_id = $1)
               GROUP BY recording_id
           ), added AS (
               SELECT c.tenant_id, c.recording_id, (c.at AT TIME ZONE 'UTC')::date AS day,
                      sum(c.size) AS bytes, (p.at AT TIME ZONE 'UTC')::date AS purged_day
               FROM (SELECT * FROM segment UNION ALL SELECT * FROM sealed) c
               LEFT JOIN purged p ON p.recording_id = c.recording_id
               GROUP BY c.tenant_id, c.recording_id, day, purged_day
           )
           SELECT d.day::date AS day, a.tenant_id, sum(a.bytes) AS held
           FROM generate_series($2::date, $3::date, interval '1 day') AS d(day)
           JOIN added a ON a.day <= d.day::date
                AND (a.purged_day IS NULL OR a.purged_day > d.day::date)
           GROUP BY d.day, a.tenant_id""",
        tenant_id,
        first,
        last,
    )
    out: dict[str, dict[date, int]] = {}
    for r in rows:
        out.setdefault(r["tenant_id"], {})[r["day"]] = int(r["held"] or 0)
    return out


async def report(
    pool: asyncpg.Pool, tenant_id: str | None, *, days: int, today: date, default_capacity: int
) -> list[TenantUsage]:
    """Each tenant's usage (one tenant, or every one for None) over the last ``days`` days."""
    first = today - timedelta(days=days - 1)
    held = await held_by_day(pool, tenant_id, first, today)
    out = []
    for t in await tenants(pool, tenant_id):
        mine = held.get(t.tenant_id, {})
        series = [
            (first + timedelta(days=i), mine.get(first + timedelta(days=i), 0)) for i in range(days)
        ]
        capacity = t.capacity_override or default_capacity
        out.append(TenantUsage(tenant=t, capacity_bytes=capacity, series=series))
    return out
