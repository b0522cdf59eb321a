"""``/v1/destinations``: where a tenant's recordings are delivered. The vault keeps them; the
config (with its secrets) crosses NATS only sealed to the vault's key."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from shared import vault_rpc as rpc
from shared.sealedbox import seal

from .. import audit, bodies
from ..config import ApiConfig
from ..errors import ApiError
from ..roles import Action
from ..web import DEPS, json_response, tenant_for

log = logging.getLogger(__name__)


def destination_json(view: rpc.DestinationView) -> dict[str, Any]:
    out = msgspec.to_builtins(view)
    assert isinstance(out, dict)
    return out


def destination_body_limit(config: ApiConfig) -> int:
    """Only to turn away obviously oversized bodies before anything is read: up to 4 UTF-8 bytes
    per character, plus the name and provider. The vault enforces the real limit."""
    return 4 * config.max_credential_chars + 4096


async def create_destination(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.MANAGE_DESTINATIONS)
    deps = request.app[DEPS]
    raw = await bodies.read_limited(request, destination_body_limit(deps.config), "request body")
    body = bodies.decode_body(raw, bodies.CreateDestination)
    del raw
    name = bodies.check_name(body.name, "name", "destination name")
    provider = body.provider
    if not provider or len(provider) > 64:
        raise ApiError(422, "The provider must be set (for example s3); fix it.", "provider")
    key = await deps.vault.public_key()
    plaintext = msgspec.json.encode(body.config)
    sealed = seal(key, plaintext, rpc.create_context(tenant_id, name))
    probe = body.probe
    # Drop every reference to the plaintext as soon as it is sealed.
    del plaintext, body
    try:
        view = await deps.vault.create(
            rpc.DestinationCreate(
                tenant_id=tenant_id, name=name, provider=provider, sealed_config=sealed, probe=probe
            )
        )
    except ApiError:
        deps.vault.forget_key()  # in case the vault's key changed; the next request re-reads it
        raise
    log.info(
        "destination created",
        extra={"tenant_id": tenant_id, "destination_id": view.destination_id},
    )
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="destination_added",
        target=view.name,
        detail=f"{view.provider}, {view.destination_id}" + (", tested" if probe else ""),
    )
    return json_response(destination_json(view), 201)


async def list_destinations(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.VIEW_DESTINATIONS)
    views = await request.app[DEPS].vault.list(tenant_id)
    return json_response({"destinations": [destination_json(v) for v in views]})


async def show_destination(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.VIEW_DESTINATIONS)
    name = bodies.check_name(request.match_info["name"], "name", "destination name")
    view = await request.app[DEPS].vault.get(tenant_id, name=name)
    return json_response(destination_json(view))


async def delete_destination(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.MANAGE_DESTINATIONS)
    name = bodies.check_name(request.match_info["name"], "name", "destination name")
    view = await request.app[DEPS].vault.delete(tenant_id, name=name)
    log.info(
        "destination deleted",
        extra={"tenant_id": tenant_id, "destination_id": view.destination_id},
    )
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="destination_deleted",
        target=view.name,
        detail=f"{view.provider}, {view.destination_id}; its key destroyed",
    )
    return json_response(destination_json(view))


async def test_destination(request: web.Request) -> web.Response:
    """Probe a stored destination: 200 with what was written, confirmed and deleted, or the
    probe's failure (422 with the field to fix, 502/504 when the storage cannot be reached)."""
    tenant_id = tenant_for(request, Action.MANAGE_DESTINATIONS)
    name = bodies.check_name(request.match_info["name"], "name", "destination name")
    reply = await request.app[DEPS].vault.test(tenant_id, name)
    if reply.problem is not None:
        log.info("destination test failed", extra={"tenant_id": tenant_id, "destination": name})
        failed = f"failed: {reply.problem.status}" + (
            f" ({reply.problem.field})" if reply.problem.field else ""
        )
        await audit.note(
            request, tenant_id=tenant_id, action="destination_tested", target=name, detail=failed
        )
        raise ApiError(reply.problem.status, reply.problem.message, reply.problem.field)
    assert reply.destination is not None and reply.probe is not None
    log.info("destination tested", extra={"tenant_id": tenant_id, "destination": name})
    await audit.note(
        request, tenant_id=tenant_id, action="destination_tested", target=name, detail="passed"
    )
    return json_response(
        {
            "ok": True,
            "destination": destination_json(reply.destination),
            "probe": msgspec.to_builtins(reply.probe),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/destinations", create_destination)
    app.router.add_get("/v1/destinations", list_destinations)
    app.router.add_get("/v1/destinations/{name}", show_destination)
    app.router.add_delete("/v1/destinations/{name}", delete_destination)
    app.router.add_post("/v1/destinations/{name}/test", test_destination)
