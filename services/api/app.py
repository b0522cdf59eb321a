"""The HTTPS API: ``build_app`` puts the routes together (one module per resource under
``routes/``; what they share is in ``web.py``). State lives in NATS (facts) and in PostgreSQL
(read model, tenants, token hashes); the vault holds destinations and webhook endpoints."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from . import bodies, openapi
from .dashboard import pages
from .routes import (
    audit,
    destination_settings,
    destinations,
    keys,
    recordings,
    retained,
    tenants,
    usage,
    users,
    webhooks,
)
from .routes import auth as signin_pages
from .routes.destinations import destination_body_limit, destination_json
from .routes.recordings import event_json, find_destination, find_recording, recording_json
from .web import (
    DEPS,
    PRINCIPAL,
    RECORDINGS,
    Deps,
    SigningKey,
    auth_middleware,
    error_response,
    errors_middleware,
    json_response,
    publish_and_fold,
    require_admin,
    tenant_of,
)

# Re-exported: these lived here before the routes were split by resource.
__all__ = [
    "DEPS",
    "PRINCIPAL",
    "RECORDINGS",
    "Deps",
    "SigningKey",
    "auth_middleware",
    "build_app",
    "destination_body_limit",
    "destination_json",
    "error_response",
    "errors_middleware",
    "event_json",
    "find_destination",
    "find_recording",
    "healthz",
    "json_response",
    "publish_and_fold",
    "recording_json",
    "require_admin",
    "tenant_of",
]


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[DEPS].pool.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return json_response({"status": "degraded", "database": "unreachable"}, 503)
    return json_response({"status": "ok"})


def build_app(deps: Deps) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware],
        client_max_size=max(bodies.DEFAULT_BODY_LIMIT, destination_body_limit(deps.config)),
    )
    app[DEPS] = deps
    app.router.add_get("/healthz", healthz)
    for module in (tenants, recordings, retained, usage, audit, destinations, keys, webhooks):
        module.add_routes(app)
    openapi.add_routes(app)  # GET /v1/openapi.json
    destination_settings.add_routes(app)
    pages.add_routes(app)  # the dashboard (services/api/dashboard)
    users.add_routes(app)  # /v1/users
    signin_pages.add_routes(app)  # /signin, /signout, /signin/link/{token}
    return app
