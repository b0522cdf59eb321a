"""``PATCH /v1/destinations/{name}``: change a destination's non-secret settings (bucket, region,
prefix, persist options) in place. Owners, admins and our operators may (operators name the
tenant with ``?tenant_id=``); nobody sees or changes a secret this way. Audited."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from shared import vault_rpc as rpc

from .. import audit_log, bodies
from ..errors import ApiError
from ..roles import Action
from ..web import DEPS, json_response, principal_of, read_body, tenant_for
from .destinations import destination_json

log = logging.getLogger(__name__)


class SettingsBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    config: dict[str, Any]


async def update_settings(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.EDIT_DESTINATION_SETTINGS)
    name = bodies.check_name(request.match_info["name"], "name", "destination name")
    body = await read_body(request, SettingsBody)
    if not body.config:
        raise ApiError(422, "config must name at least one setting to change.", "config")
    deps = request.app[DEPS]
    reply = await deps.vault.request(
        rpc.SUBJECT_UPDATE,
        rpc.DestinationUpdate(tenant_id=tenant_id, name=name, config=body.config),
        rpc.DestinationReply,
        deps.vault.timeout,
    )
    if reply.problem is not None:
        raise ApiError(reply.problem.status, reply.problem.message, reply.problem.field or "config")
    assert reply.destination is not None
    principal = principal_of(request)
    await audit_log.record(
        deps.pool,
        tenant_id=tenant_id,
        actor=principal.who,
        action="destination_settings_changed",
        target=name,
        detail=", ".join(
            f"{k}={'(removed)' if v is None else v}" for k, v in sorted(body.config.items())
        ),
    )
    log.info(
        "destination settings changed",
        extra={"tenant_id": tenant_id, "destination": name, "by": principal.role},
    )
    return json_response(destination_json(reply.destination))


def add_routes(app: web.Application) -> None:
    app.router.add_patch("/v1/destinations/{name}", update_settings)
