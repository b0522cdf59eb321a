"""``GET /v1/retained``: the retained backups, every recording held because its upload failed,
with why (``retained.reason``), since when (``retained.since``) and what its backup holds
(``backup_bytes``). The rows and parameters are ``GET /v1/recordings``'s, the state fixed;
re-send one with ``POST /v1/recordings/{recording_id}/resend``."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from .. import query
from ..errors import ApiError
from ..roles import Action
from .recordings import list_filters, list_page


async def list_retained(request: web.Request) -> web.Response:
    if "state" in request.query:
        raise ApiError(400, "The retained backups are all in state retained; drop state.", "state")
    tenant_id = query.scope(request, Action.VIEW_RECORDINGS)
    filters = dataclasses.replace(list_filters(request, tenant_id), states=["retained"])
    return await list_page(request, filters, key="retained")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/retained", list_retained)
