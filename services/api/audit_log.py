"""The API's own audit entries: sign-ins, user changes, destination changes, re-sends, webhook
changes (who, when, what; never a secret). The vault's audit (grants issued and refused) is on
the VAULT stream and folded into the read model; ``/v1/audit`` shows both.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

SCHEMA = """
CREATE TABLE IF NOT EXISTS api.audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    tenant_id  text,                -- NULL: not a tenant's (operators, the admin token)
    actor      text NOT NULL,       -- the user's email, or "tenant token" / "admin token"
    action     text NOT NULL,       -- e.g. "sign_in", "sign_in_failed", "destination_added"
    target     text NOT NULL DEFAULT '',  -- what it was done to: an id or a name
    detail     text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON api.audit_log (tenant_id, at DESC);
"""


async def record(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    tenant_id: str | None,
    actor: str,
    action: str,
    target: str = "",
    detail: str = "",
    at: datetime | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO api.audit_log (tenant_id, actor, action, target, detail, at)
           VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))""",
        tenant_id,
        actor[:320],
        action[:64],
        target[:200],
        detail[:1000],
        at,
    )
