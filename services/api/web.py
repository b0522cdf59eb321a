"""What every route module shares: the dependencies, JSON and error responses, the error and
authentication middlewares, who is asking (``tenant_of``, ``require_admin``) and publishing an
event the caller reads back at once (``publish_and_fold``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
from aiohttp import web
from nats.js import JetStreamContext

from shared import natsio
from shared.events import recordings
from shared.events.base import Event

from . import bodies, db, tokens
from .config import ApiConfig
from .errors import ApiError
from .roles import Principal
from .vault import VaultClient
from .webhook_vault import WebhookVaultClient

log = logging.getLogger(__name__)

T = TypeVar("T")

RECORDINGS = recordings.STREAM
LIST_LIMIT_MAX = 1000


@dataclass(frozen=True)
class SigningKey:
    """The public half of the operator's manifest-signing key (no secret)."""

    public_key_pem: str
    key_id: str
    algorithm: str = "Ed25519"


@dataclass
class Deps:
    config: ApiConfig
    pool: asyncpg.Pool
    js: JetStreamContext
    vault: VaultClient
    webhooks: WebhookVaultClient
    signing: SigningKey | None = None


DEPS = web.AppKey("deps", Deps)
PRINCIPAL = "resguardo.principal"

_json = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=_json.encode(data),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def error_response(status: int, message: str, field: str = "") -> web.Response:
    response = json_response({"error": {"message": message, "field": field}}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="resguardo"'
    return response


_HTTP_MESSAGES = {
    404: "No such endpoint; see the API section of the README.",
    405: "This endpoint does not accept that method; see the API section of the README.",
    413: "The request body is too large; send a smaller one.",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _HTTP_MESSAGES.get(exc.status, "The request was refused; check it and retry.")
        return error_response(exc.status, message)
    except asyncio.CancelledError:
        raise
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        log.warning("NATS failed during a request", extra={"error": type(exc).__name__})
        return error_response(
            503, "The API could not reach NATS (its event store); retry in a moment."
        )
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("the database failed during a request", extra={"error": type(exc).__name__})
        return error_response(503, "The API could not reach its database; retry in a moment.")
    except Exception as exc:
        log.error(
            "request failed",
            extra={"path": request.path, "method": request.method, "error": type(exc).__name__},
            exc_info=True,
        )
        return error_response(500, "The API failed on this request; check its log, then retry.")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/healthz":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "Missing API token; send `Authorization: Bearer <token>` (the dev token is in "
            "<data dir>/secrets/dev-api-token).",
            "authorization",
        )
    principal = await db.principal(request.app[DEPS].pool, tokens.token_hash(token))
    del token, header
    if principal is None:
        raise ApiError(
            401, "The API token is not valid; check RESGUARDO_API_TOKEN.", "authorization"
        )
    request[PRINCIPAL] = principal
    return await handler(request)


def tenant_of(request: web.Request) -> str:
    principal: Principal = request[PRINCIPAL]
    if principal.role != "tenant" or principal.tenant_id is None:
        raise ApiError(
            403, "The admin token only manages tenants; use a tenant's API token for this."
        )
    return principal.tenant_id


def require_admin(request: web.Request) -> None:
    principal: Principal = request[PRINCIPAL]
    if principal.role != "admin":
        raise ApiError(403, "Only the admin token may manage tenants; use it for this request.")


# --- small shared helpers ---------------------------------------------------------------------


async def read_body(
    request: web.Request,
    model: type[T],
    *,
    limit: int = bodies.DEFAULT_BODY_LIMIT,
    allow_empty: bool = False,
) -> T:
    """The request's JSON body, decoded strictly into ``model`` (errors name the field)."""
    raw = await bodies.read_limited(request, limit)
    return bodies.decode_body(raw, model, allow_empty=allow_empty)


def query_limit(request: web.Request, default: int = 100, maximum: int = LIST_LIMIT_MAX) -> int:
    try:
        limit = int(request.query.get("limit", str(default)))
    except ValueError:
        raise ApiError(400, "limit must be a whole number; fix the query.", "limit") from None
    if not 1 <= limit <= maximum:
        raise ApiError(400, f"limit must be between 1 and {maximum}.", "limit")
    return limit


async def publish_and_fold(deps: Deps, event: Event) -> None:
    """Publish, then fold the event into the read model right away (read-your-writes); the
    projector meets the same (stream, seq) later and skips it."""
    ack = await natsio.publish(deps.js, event)
    try:
        await db.apply_published(deps.pool, RECORDINGS.name, ack.seq, event)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning(
            "could not fold a published event yet; the projector will",
            extra={"event_id": event.event_id, "error": type(exc).__name__},
        )
