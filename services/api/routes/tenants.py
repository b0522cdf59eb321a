"""``POST /v1/tenants`` (admin token only): a new tenant and its first API token."""

from __future__ import annotations

import logging

from aiohttp import web

from shared.ids import new_tenant_id

from .. import bodies, db, tokens
from ..errors import ApiError
from ..web import DEPS, json_response, read_body, require_admin

log = logging.getLogger(__name__)


async def create_tenant(request: web.Request) -> web.Response:
    require_admin(request)
    deps = request.app[DEPS]
    body = await read_body(request, bodies.CreateTenant)
    name = bodies.check_name(body.name, "name", "tenant name")
    tenant_id, token = new_tenant_id(), tokens.new_token()
    if not await db.create_tenant(deps.pool, tenant_id, name, tokens.token_hash(token)):
        raise ApiError(409, f"A tenant named {name!r} exists already; choose another name.", "name")
    log.info("tenant created", extra={"tenant_id": tenant_id})
    return json_response({"tenant_id": tenant_id, "name": name, "token": token}, 201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/tenants", create_tenant)
