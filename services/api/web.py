"""What every route module shares: the dependencies, JSON and error responses, the error and
authentication middlewares (API tokens and dashboard sessions, with their CSRF and same-origin
checks), who is asking and what they may do (``require``, ``tenant_for``, ``require_admin``,
``hide_names``) and publishing an event the caller reads back at once (``publish_and_fold``)."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
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
from shared.ids import TENANT_ID_RE

from . import bodies, db, tokens
from .auth import sessions
from .config import ApiConfig
from .errors import ApiError
from .roles import Action, Principal, can
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


# Request keys: who is asking (every request but /healthz and the assets) and, for a dashboard
# session, its CSRF token (the same strings as ``dashboard.PRINCIPAL_KEY`` and ``CSRF_KEY``).
CSRF_KEY = "resguardo.csrf_token"
STATIC_PREFIX = "/ui/static/"
SIGNIN_PATH = "/signin"
HOME_PATH = "/ui/recordings"
_NO_CREDENTIALS = (
    "Missing API token; send `Authorization: Bearer <token>` (the dev token is in "
    "<data dir>/secrets/dev-api-token)."
)


def is_signin_path(path: str) -> bool:
    """The sign-in pages, open without a session (their forms carry their own CSRF token)."""
    return path == SIGNIN_PATH or path.startswith(SIGNIN_PATH + "/link/")


def is_page_path(path: str) -> bool:
    """The dashboard's pages: without a session they send the browser to the sign-in page."""
    return path in ("/", "/ui", "/signout") or (
        path.startswith("/ui/") and not path.startswith(STATIC_PREFIX)
    )


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no scheme, no host, no ``//``
    or backslash tricks), never back to the sign-in pages; else the recordings page."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return HOME_PATH
    if "\\" in value or any(ord(c) < 33 or ord(c) == 127 for c in value):
        return HOME_PATH
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme or parsed.netloc or is_signin_path(parsed.path) or parsed.path == "/signout":
        return HOME_PATH
    return value


def page_headers() -> dict[str, str]:
    from .dashboard import SECURITY_HEADERS  # lazily: the dashboard may import this module

    return dict(SECURITY_HEADERS)


def _refuse(request: web.Request, status: int, message: str, field: str = "") -> web.Response:
    """An error for a browser: JSON on the API's paths, a plain sentence on the pages."""
    if request.path.startswith("/v1/"):
        return error_response(status, message, field)
    return web.Response(status=status, text=message + "\n", headers=page_headers())


def _to_signin(request: web.Request, *, stale_cookie: bool) -> web.Response:
    target = SIGNIN_PATH
    if request.method in ("GET", "HEAD") and request.path != "/signout":
        wanted = safe_next(request.path_qs)
        if wanted != HOME_PATH or request.path == HOME_PATH:
            target += "?" + urllib.parse.urlencode({"next": wanted})
    response = web.Response(status=303, headers={**page_headers(), "Location": target})
    if stale_cookie:
        sessions.clear_cookie(response)
    return response


async def _token_principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, _NO_CREDENTIALS, "authorization")
    principal = await db.principal(request.app[DEPS].pool, tokens.token_hash(token))
    del token, header
    if principal is None:
        raise ApiError(
            401, "The API token is not valid; check RESGUARDO_API_TOKEN.", "authorization"
        )
    return principal


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking: an API token (``Authorization: Bearer``), else a dashboard session
    (cookie). A session's state-changing requests must come from our own origin and carry its
    CSRF token; token callers send no cookie and are unaffected. /healthz and the dashboard's
    assets are public; the sign-in pages are open; other pages send a browser without a session
    to the sign-in page."""
    path = request.path
    if path == "/healthz" or path.startswith(STATIC_PREFIX):
        return await handler(request)
    if "Authorization" in request.headers:
        request[PRINCIPAL] = await _token_principal(request)
        return await handler(request)
    deps = request.app[DEPS]
    cookie = request.cookies.get(sessions.COOKIE, "")
    session = (
        await sessions.lookup(deps.pool, cookie, idle_s=deps.config.session_idle_s)
        if cookie
        else None
    )
    unsafe = request.method in sessions.UNSAFE_METHODS
    if unsafe and (session is not None or is_signin_path(path)) and sessions.cross_site(request):
        return _refuse(
            request,
            403,
            "Cross-site request refused: changes are accepted only from the dashboard's own "
            "pages; open the dashboard and try again there.",
            "origin",
        )
    if session is not None:
        request[PRINCIPAL] = session.principal
        request[CSRF_KEY] = session.csrf_token
        # The sign-in forms carry their own token (checked by their handlers).
        checked = unsafe and not is_signin_path(path)
        sent = await sessions.sent_csrf(request) if checked else ""
        if checked and not sessions.same_token(sent, session.csrf_token):
            return _refuse(
                request,
                403,
                "The CSRF token is missing or wrong; reload the page and try again "
                "(send it as the csrf_token form field or the X-CSRF-Token header).",
                "csrf_token",
            )
        return await handler(request)
    if is_signin_path(path):
        return await handler(request)
    if is_page_path(path):
        return _to_signin(request, stale_cookie=bool(cookie))
    if cookie:
        raise ApiError(
            401,
            "Your dashboard session has ended (it expired, sat idle or was signed out); "
            "sign in again at /signin.",
            "authorization",
        )
    raise ApiError(401, _NO_CREDENTIALS, "authorization")


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def _is_admin_token(principal: Principal) -> bool:
    return principal.via == "token" and principal.role == "admin"


def require(request: web.Request, action: Action) -> Principal:
    """The caller, if its role may do ``action``; else 403 naming the action."""
    principal = principal_of(request)
    if can(principal, action):
        return principal
    if _is_admin_token(principal):
        raise ApiError(
            403, "The admin token only manages tenants; use a tenant's API token for this."
        )
    raise ApiError(403, f"Your role ({principal.role}) may not {action.value}.")


def tenant_for(request: web.Request, action: Action) -> str:
    """The tenant a tenant-scoped request is about, once the caller may do ``action``: the
    caller's own; for operators (every tenant, none of their own) the ``tenant_id`` query
    parameter, required (422 naming it)."""
    principal = require(request, action)
    asked = request.query.get("tenant_id", "")
    if principal.tenant_id is not None:
        if asked and asked != principal.tenant_id:
            raise ApiError(403, "You may only act on your own tenant; drop tenant_id.", "tenant_id")
        return principal.tenant_id
    if not can(principal, Action.ACROSS_TENANTS):
        raise ApiError(
            403, "The admin token only manages tenants; use a tenant's API token for this."
        )
    if not asked:
        raise ApiError(
            422,
            "Name the tenant this is about: add ?tenant_id=ten_... (operators act on every "
            "tenant, one at a time).",
            "tenant_id",
        )
    if not TENANT_ID_RE.match(asked):
        raise ApiError(
            422, "tenant_id must look like ten_ followed by 16 hex digits; fix it.", "tenant_id"
        )
    return asked


def tenant_of(request: web.Request) -> str:
    """Kept for callers written before roles: the caller's tenant with every tenant right."""
    return tenant_for(request, Action.MANAGE_USERS)


def require_admin(request: web.Request) -> None:
    """The system admin token only (a tenant's "admin" *user* is another role)."""
    if not can(principal_of(request), Action.MANAGE_TENANTS):
        raise ApiError(403, "Only the admin token may manage tenants; use it for this request.")


def hide_names(request: web.Request, recording: dict[str, Any]) -> dict[str, Any]:
    """A recording's JSON without participants' display names (in its participants and its
    events), unless the caller may see them (operators may not)."""
    if can(principal_of(request), Action.VIEW_PARTICIPANTS):
        return recording
    for item in (*recording.get("participants", ()), *recording.get("events", ())):
        if isinstance(item, dict) and "display_name" in item:
            item["display_name"] = ""
    return recording


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
