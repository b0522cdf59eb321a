"""``GET /v1/usage``: backup bytes held per tenant, per day, against its backup capacity (a
warning only: see ``services/api/usage.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from .. import query, usage
from ..roles import Action
from ..web import DEPS, json_response

DAYS_DEFAULT = 30
DAYS_MAX = 366


async def show_usage(request: web.Request) -> web.Response:
    """The caller's tenant (an operator: every tenant, or ``tenant_id``) over the last ``days``
    days (30 by default, at most 366), today included."""
    tenant_id = query.scope(request, Action.VIEW_USAGE)
    days = query.whole_number(request, "days", DAYS_DEFAULT, 1, DAYS_MAX)
    deps = request.app[DEPS]
    report = await usage.report(
        deps.pool,
        tenant_id,
        days=days,
        today=datetime.now(UTC).date(),
        default_capacity=deps.config.backup_capacity_bytes,
    )
    return json_response(
        {
            "days": days,
            "default_capacity_bytes": deps.config.backup_capacity_bytes,
            "warning_percent": usage.WARNING_PERCENT,
            "full_percent": usage.FULL_PERCENT,
            "tenants": [t.to_json() for t in report],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/usage", show_usage)
