"""The read model of webhook deliveries (``api.webhook_deliveries``), folded from WEBHOOKS.

One row per delivery, keyed by the ``webhook.queued`` event's ``event_id`` (the delivery id):

    queued     queued, not answered yet (or answered 2xx, ``webhook.delivered`` on its way)
    failing    the last attempt failed; the notifier retries it (``next_attempt_at``)
    delivered  a 2xx answer (``webhook.delivered``)
    gave_up    retries are spent, or the failure is permanent (``webhook.gave_up``)

``apply_in_tx`` runs inside ``db.apply_event``'s transaction (the stream's offset moves with it),
so a replay is a no-op. Events of one delivery share the stream, so they arrive in order; a
delivery never goes back from delivered or gave_up, and never changes tenant. Bodies are not
kept: the notifier has them, and the API has no use for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.events import webhooks
from shared.events.base import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS api.webhook_deliveries (
    delivery_id     text PRIMARY KEY,
    endpoint_id     text NOT NULL,
    tenant_id       text NOT NULL,
    recording_id    text NOT NULL,
    webhook_id      text NOT NULL DEFAULT '',
    webhook_type    text NOT NULL DEFAULT '',
    redelivery_of   text NOT NULL DEFAULT '',
    state           text NOT NULL
                    CHECK (state IN ('queued', 'failing', 'delivered', 'gave_up')),
    attempts        integer NOT NULL DEFAULT 0,
    last_status     integer,  -- NULL: no attempt yet; 0: no answer
    last_error      text NOT NULL DEFAULT '',
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_tenant
    ON api.webhook_deliveries (tenant_id, created_at DESC);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint
    ON api.webhook_deliveries (endpoint_id, created_at DESC);
"""

STATES = ("queued", "failing", "delivered", "gave_up")
FAILED = ("failing", "gave_up")

_QUEUED = """
INSERT INTO api.webhook_deliveries AS d
    (delivery_id, endpoint_id, tenant_id, recording_id, webhook_id, webhook_type, redelivery_of,
     state, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8)
ON CONFLICT (delivery_id) DO UPDATE SET
    webhook_id = EXCLUDED.webhook_id,
    webhook_type = EXCLUDED.webhook_type,
    redelivery_of = EXCLUDED.redelivery_of,
    created_at = LEAST(d.created_at, EXCLUDED.created_at)
WHERE d.tenant_id = EXCLUDED.tenant_id
"""

# Attempted, delivered, gave up: also when the queued event was never seen (it was undecodable),
# so the delivery still shows, with what these events tell.
_PROGRESS = """
INSERT INTO api.webhook_deliveries AS d
    (delivery_id, endpoint_id, tenant_id, recording_id, webhook_id, state, attempts,
     last_status, last_error, next_attempt_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
ON CONFLICT (delivery_id) DO UPDATE SET
    state = CASE WHEN d.state IN ('delivered', 'gave_up')
                      AND EXCLUDED.state IN ('queued', 'failing')
                 THEN d.state ELSE EXCLUDED.state END,
    attempts = GREATEST(d.attempts, EXCLUDED.attempts),
    last_status = COALESCE(EXCLUDED.last_status, d.last_status),
    last_error = EXCLUDED.last_error,
    next_attempt_at = EXCLUDED.next_attempt_at,
    updated_at = GREATEST(d.updated_at, EXCLUDED.updated_at)
WHERE d.tenant_id = EXCLUDED.tenant_id
"""


def _ok(status: int) -> bool:
    return 200 <= status < 300


async def apply_in_tx(conn: asyncpg.Connection, event: Event) -> None:
    """Fold one WEBHOOKS event (inside the projector's transaction)."""
    match event:
        case webhooks.DeliveryQueued():
            await conn.execute(
                _QUEUED,
                event.event_id,
                event.endpoint_id,
                event.tenant_id,
                event.recording_id,
                event.webhook_id,
                event.webhook_type,
                event.redelivery_of,
                event.occurred_at,
            )
        case webhooks.DeliveryAttempted():
            ok = _ok(event.status) and not event.error
            error = "" if ok else (event.error or f"HTTP {event.status}")
            state = "queued" if ok else "failing"
            await _progress(
                conn, event, state, event.attempt, event.status, error, event.next_attempt_at
            )
        case webhooks.DeliveryDelivered():
            await _progress(conn, event, "delivered", event.attempts, event.status, "", None)
        case webhooks.DeliveryGaveUp():
            await _progress(conn, event, "gave_up", event.attempts, None, event.reason, None)
        case _:
            pass  # endpoint_disabled: the endpoint's state is the vault's, not a delivery's


async def _progress(
    conn: asyncpg.Connection,
    event: webhooks.DeliveryAttempted | webhooks.DeliveryDelivered | webhooks.DeliveryGaveUp,
    state: str,
    attempts: int,
    status: int | None,
    error: str,
    next_attempt_at: datetime | None,
) -> None:
    await conn.execute(
        _PROGRESS,
        event.delivery_id,
        event.endpoint_id,
        event.tenant_id,
        event.recording_id,
        event.webhook_id,
        state,
        attempts,
        status,
        error[:1000],
        next_attempt_at,
        event.occurred_at,
    )


# --- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    tenant_id: str
    recording_id: str
    webhook_id: str
    webhook_type: str
    redelivery_of: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def failed(self) -> bool:
        return self.state in FAILED

    def to_json(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "endpoint_id": self.endpoint_id,
            "recording_id": self.recording_id,
            "webhook_id": self.webhook_id,
            "webhook_type": self.webhook_type,
            "state": self.state,
            "failed": self.failed,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "redelivery_of": self.redelivery_of,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


_COLUMNS = (
    "delivery_id, endpoint_id, tenant_id, recording_id, webhook_id, webhook_type, redelivery_of, "
    "state, attempts, last_status, last_error, next_attempt_at, created_at, updated_at"
)


def _row(r: asyncpg.Record) -> Delivery:
    return Delivery(**{k: r[k] for k in Delivery.__dataclass_fields__})


async def list_deliveries(
    pool: asyncpg.Pool,
    tenant_id: str,
    *,
    limit: int,
    endpoint_id: str | None = None,
    failed: bool = False,
    since: datetime | None = None,
) -> list[Delivery]:
    """The tenant's deliveries, newest first."""
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM api.webhook_deliveries
            WHERE tenant_id = $1
              AND ($2::text IS NULL OR endpoint_id = $2)
              AND (NOT $3::boolean OR state = ANY($4::text[]))
              AND ($5::timestamptz IS NULL OR created_at >= $5)
            ORDER BY created_at DESC, delivery_id DESC LIMIT $6""",  # noqa: S608 (constant)
        tenant_id,
        endpoint_id,
        failed,
        list(FAILED),
        since,
        limit,
    )
    return [_row(r) for r in rows]


async def get_delivery(pool: asyncpg.Pool, tenant_id: str, delivery_id: str) -> Delivery | None:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM api.webhook_deliveries "  # noqa: S608 (constant)
        "WHERE delivery_id = $1 AND tenant_id = $2",
        delivery_id,
        tenant_id,
    )
    return _row(row) if row else None


async def given_up_since(
    pool: asyncpg.Pool, tenant_id: str, since: datetime, *, endpoint_id: str | None, limit: int
) -> list[Delivery]:
    """What ``redeliver --since`` sends again: per endpoint and ``webhook_id``, the newest
    delivery, when it gave up and was queued since ``since``; oldest first. A delivery still
    being retried is left to its retries, and one redelivered already is not sent twice."""
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM (
                SELECT DISTINCT ON (endpoint_id, webhook_id) {_COLUMNS}
                FROM api.webhook_deliveries
                WHERE tenant_id = $1 AND ($2::text IS NULL OR endpoint_id = $2)
                ORDER BY endpoint_id, webhook_id, created_at DESC, delivery_id DESC) newest
            WHERE state = 'gave_up' AND created_at >= $3
            ORDER BY created_at, delivery_id LIMIT $4""",  # noqa: S608 (constant)
        tenant_id,
        endpoint_id,
        since,
        limit,
    )
    return [_row(r) for r in rows]
