"""``GET /v1/audit``: the audit trail, newest first (who, when, what; never a secret). The
entries and where they come from: ``services/api/audit.py``."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from .. import audit, query
from ..roles import Action
from ..web import DEPS, json_response


async def list_audit(request: web.Request) -> web.Response:
    """``limit`` (50, at most 200), ``cursor`` (the last page's ``next_cursor``), ``since`` (an
    ISO date or time) and, for operators, ``tenant_id``."""
    tenant_id = query.scope(request, Action.VIEW_AUDIT)
    limit = query.page_limit(request)
    since = query.when(request, "since")
    after = query.decode_cursor(request, (datetime, str, int))
    key = None
    if after is not None:
        at, source, n = after
        assert isinstance(at, datetime) and isinstance(source, str) and isinstance(n, int)
        key = (at, source, n)
    rows, more = await audit.entries(
        request.app[DEPS].pool, tenant_id, limit=limit, since=since, after=key
    )
    next_cursor = query.encode_cursor(*rows[-1].key) if rows and more else None
    return json_response({"entries": [e.to_json() for e in rows], "next_cursor": next_cursor})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/audit", list_audit)
