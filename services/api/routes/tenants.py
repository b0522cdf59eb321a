"""``/v1/tenants`` (admin token only): ``POST`` a new tenant and its first API token; ``PATCH
/v1/tenants/{tenant_id}`` its settings (its backup capacity)."""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from shared.ids import TENANT_ID_RE, new_tenant_id

from .. import audit, bodies, db, tokens, usage
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


class TenantSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Bytes of backup the tenant may hold before /v1/usage warns; null: the default
    # (RESGUARDO_BACKUP_CAPACITY_BYTES).
    backup_capacity_bytes: int | None


async def update_tenant(request: web.Request) -> web.Response:
    require_admin(request)
    deps = request.app[DEPS]
    tenant_id = request.match_info["tenant_id"]
    if not TENANT_ID_RE.match(tenant_id):
        raise ApiError(
            400, "That is not a tenant id (they look like ten_ and 16 hex digits).", "tenant_id"
        )
    body = await read_body(request, TenantSettings)
    capacity = body.backup_capacity_bytes
    if capacity is not None and not 0 < capacity < 2**63:
        raise ApiError(
            422,
            "backup_capacity_bytes must be a positive number of bytes, or null for the default.",
            "backup_capacity_bytes",
        )
    tenant = await usage.set_capacity(deps.pool, tenant_id, capacity)
    if tenant is None:
        raise ApiError(404, "No tenant with this id.", "tenant_id")
    shown = "the default" if capacity is None else f"{capacity} bytes"
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="backup_capacity_changed",
        target=tenant.name,
        detail=f"backup capacity set to {shown}",
    )
    log.info("tenant updated", extra={"tenant_id": tenant_id, "backup_capacity_bytes": capacity})
    return json_response(
        {
            "tenant_id": tenant.tenant_id,
            "name": tenant.name,
            "backup_capacity_bytes": tenant.capacity_override,
            "effective_capacity_bytes": tenant.capacity_override
            or deps.config.backup_capacity_bytes,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/tenants", create_tenant)
    app.router.add_patch("/v1/tenants/{tenant_id}", update_tenant)
