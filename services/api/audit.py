"""The audit trail ``GET /v1/audit`` shows, newest first: the API's own entries
(``api.audit_log``: sign-ins, user, destination, webhook and capacity changes, re-sends, key
rotations) merged with the vault's (the VAULT events in ``api.recording_events``: credential
grants issued and refused, recording keys issued, refused and destroyed).

Never a secret: ``api.audit_log`` is written with names and ids only, and of a vault event only
the fields below are shown (VAULT events carry no secret in the first place).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from shared.events import vault

from . import audit_log
from .roles import Principal
from .web import DEPS, PRINCIPAL

log = logging.getLogger(__name__)

VAULT = vault.STREAM.name


@dataclass(frozen=True)
class Entry:
    at: datetime
    source: str  # "api" or "vault"
    n: int  # api.audit_log's id, or the VAULT stream sequence
    tenant_id: str | None
    actor: str
    action: str
    target: str
    detail: str

    @property
    def key(self) -> tuple[datetime, str, int]:
        return (self.at, self.source, self.n)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "source": self.source,
            "tenant_id": self.tenant_id,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


def _vault_detail(kind: str, s: dict[str, Any]) -> str:
    """What a vault event says, from an allow-list of its fields."""
    parts = []
    if s.get("job_id"):
        parts.append(f"job {s['job_id']}")
    if s.get("destination_id"):
        parts.append(f"destination {s['destination_id']}")
    if s.get("purpose"):
        parts.append(f"for {s['purpose']}")
    if s.get("key_version"):
        parts.append(f"master key version {s['key_version']}")
    if kind == "recording_key_issued" and s.get("created"):
        parts.append("new key")
    if kind == "recording_key_destroyed" and s.get("existed") is False:
        parts.append("there was no key")
    text = ", ".join(parts)
    if s.get("reason"):
        text = f"{text}: {s['reason']}" if text else str(s["reason"])
    return text[:1000]


async def entries(
    pool: asyncpg.Pool,
    tenant_id: str | None,
    *,
    limit: int,
    since: datetime | None = None,
    after: tuple[datetime, str, int] | None = None,
) -> tuple[list[Entry], bool]:
    """Up to ``limit`` entries, newest first (of one tenant, or every one for None), and whether
    more follow. ``after``: the cursor, the sort key of the last entry of the page before."""
    rows = await pool.fetch(
        """SELECT * FROM (
               SELECT at, 'api' AS source, id AS n, tenant_id, actor, action, target, detail,
                      NULL::jsonb AS summary
               FROM api.audit_log
               WHERE ($1::text IS NULL OR tenant_id = $1)
               UNION ALL
               SELECT occurred_at, 'vault', seq, tenant_id, '', type, recording_id, '', summary
               FROM api.recording_events
               WHERE stream = $2 AND ($1::text IS NULL OR tenant_id = $1)
           ) a
           WHERE ($3::timestamptz IS NULL OR at >= $3)
             AND ($4::timestamptz IS NULL OR (at, source, n) < ($4, $5::text, $6::bigint))
           ORDER BY at DESC, source DESC, n DESC LIMIT $7""",
        tenant_id,
        VAULT,
        since,
        after[0] if after else None,
        after[1] if after else "",
        after[2] if after else 0,
        limit + 1,
    )
    out = []
    for r in rows[:limit]:
        if r["source"] == "api":
            out.append(
                Entry(
                    r["at"],
                    "api",
                    int(r["n"]),
                    r["tenant_id"],
                    r["actor"],
                    r["action"],
                    r["target"],
                    r["detail"],
                )
            )
            continue
        summary = msgspec.json.decode(r["summary"]) if r["summary"] else {}
        kind = str(r["action"]).removeprefix("vault.")
        actor = str(summary.get("requester") or "vault")
        out.append(
            Entry(
                r["at"],
                "vault",
                int(r["n"]),
                r["tenant_id"],
                actor,
                kind,
                r["target"],
                _vault_detail(kind, summary),
            )
        )
    return out, len(rows) > limit


# --- writing ----------------------------------------------------------------------------------


async def note(
    request: web.Request,
    *,
    tenant_id: str | None,
    action: str,
    target: str = "",
    detail: str = "",
) -> None:
    """Record what the caller just did. The deed is done: a database failure here is logged,
    never turned into an error the client would retry (and so repeat the deed)."""
    principal: Principal = request[PRINCIPAL]
    try:
        await audit_log.record(
            request.app[DEPS].pool,
            tenant_id=tenant_id,
            actor=principal.who,
            action=action,
            target=target,
            detail=detail,
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.error(
            "could not write an audit entry",
            extra={"action": action, "target": target, "error": type(exc).__name__},
        )
