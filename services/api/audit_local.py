"""Audit entries from the operator's local tools (``resguardo keys rotate|rewrap|retire``), which
run on the vault's host against its database rather than through the API: light on purpose
(asyncpg only), so the CLI does not load the API to write one row."""

from __future__ import annotations

import asyncpg

from . import audit_log


async def record_local(url: str, *, actor: str, action: str, detail: str = "") -> bool:
    """For the operator's local tools (``resguardo keys rotate|rewrap|retire``): an entry in
    ``api.audit_log`` when the API's schema is in that database (one database for the whole
    system, as ``resguardo up`` runs it). False when it is not, or the database cannot be
    reached: the tool's own work is done either way."""
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        if await conn.fetchval("SELECT to_regclass('api.audit_log')") is None:
            return False
        await audit_log.record(conn, tenant_id=None, actor=actor, action=action, detail=detail)
        return True
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    finally:
        await conn.close()
