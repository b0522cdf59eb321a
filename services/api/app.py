"""The HTTPS API: routes, authentication and error mapping. State lives in NATS (facts) and in
PostgreSQL (read model, tenants, token hashes); the vault holds destinations."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
from aiohttp import web
from nats.js import JetStreamContext

from shared import natsio
from shared import vault_rpc as rpc
from shared.events import event_id, now, recordings
from shared.events.base import Event
from shared.ids import new_recording_id, new_tenant_id
from shared.sealedbox import seal

from . import bodies, db, tokens
from .config import ApiConfig
from .errors import ApiError
from .projection import RecordingView, apply
from .state import RESENDABLE
from .vault import VaultClient

log = logging.getLogger(__name__)

RECORDINGS = recordings.STREAM
LIST_LIMIT_MAX = 1000
EVENTS_LIMIT = 1000


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
    principal: db.Principal = request[PRINCIPAL]
    if principal.role != "tenant" or principal.tenant_id is None:
        raise ApiError(
            403, "The admin token only manages tenants; use a tenant's API token for this."
        )
    return principal.tenant_id


def require_admin(request: web.Request) -> None:
    principal: db.Principal = request[PRINCIPAL]
    if principal.role != "admin":
        raise ApiError(403, "Only the admin token may manage tenants; use it for this request.")


# --- views ------------------------------------------------------------------------------------

_ENVELOPE = ("seq", "stream", "type", "occurred_at")


def event_json(row: db.EventRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": row.seq,
        "stream": row.stream,
        "type": row.type,
        "occurred_at": row.occurred_at,
    }
    for key, value in row.summary.items():
        if key in _ENVELOPE:
            key = "segment_seq" if key == "seq" else f"detail_{key}"
        out[key] = value
    return out


def recording_json(view: RecordingView) -> dict[str, Any]:
    return {
        "recording_id": view.recording_id,
        "tenant_id": view.tenant_id,
        "destination": view.destination,
        "destination_id": view.destination_id,
        "state": view.state,
        "label": view.label,
        "stop_requested": view.stop_requested,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "participants": msgspec.to_builtins(view.participants),
        "files": [
            {
                "name": f.name,
                "role": f.role,
                "size": f.size,
                "sha256": f.sha256,
                "remote_uri": f.remote_uri,
            }
            for f in view.files
        ],
    }


def destination_json(view: rpc.DestinationView) -> dict[str, Any]:
    out = msgspec.to_builtins(view)
    assert isinstance(out, dict)
    return out


# --- helpers ----------------------------------------------------------------------------------


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


async def find_recording(deps: Deps, tenant_id: str, recording_id: str) -> RecordingView:
    bodies.check_recording_id(recording_id)
    view = await db.get_recording(deps.pool, tenant_id, recording_id)
    if view is not None:
        return view
    # Not projected yet (the projector may be catching up): the stream is the source of truth.
    try:
        started = await natsio.last_event(deps.js, RECORDINGS, f"recordings.{recording_id}.started")
    except (msgspec.ValidationError, msgspec.DecodeError):
        started = None  # a broken message there was dead-lettered by its consumers
    if isinstance(started, recordings.RecordingStarted) and started.tenant_id == tenant_id:
        return apply(None, started)
    raise ApiError(
        404,
        "No recording with this id for your tenant; list them with `resguardo recordings list`.",
        "recording_id",
    )


async def find_destination(
    deps: Deps, tenant_id: str, *, name: str = "", destination_id: str = ""
) -> rpc.DestinationView:
    try:
        return await deps.vault.get(tenant_id, name=name, destination_id=destination_id)
    except ApiError as exc:
        if exc.status == 404:
            message = (
                f"There is no destination named {name!r} for your tenant; create it with "
                "`resguardo destinations add` or pick another."
                if name
                else "The destination this recording was started with no longer exists; "
                "name another one to resend to."
            )
            raise ApiError(404, message, "destination") from None
        exc.field = exc.field if exc.field not in ("", "name") else "destination"
        raise


# --- handlers ---------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[DEPS].pool.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return json_response({"status": "degraded", "database": "unreachable"}, 503)
    return json_response({"status": "ok"})


async def create_tenant(request: web.Request) -> web.Response:
    require_admin(request)
    deps = request.app[DEPS]
    body = bodies.decode_body(
        await bodies.read_limited(request, bodies.DEFAULT_BODY_LIMIT), bodies.CreateTenant
    )
    name = bodies.check_name(body.name, "name", "tenant name")
    tenant_id, token = new_tenant_id(), tokens.new_token()
    if not await db.create_tenant(deps.pool, tenant_id, name, tokens.token_hash(token)):
        raise ApiError(409, f"A tenant named {name!r} exists already; choose another name.", "name")
    log.info("tenant created", extra={"tenant_id": tenant_id})
    return json_response({"tenant_id": tenant_id, "name": name, "token": token}, 201)


async def start_recording(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    deps = request.app[DEPS]
    body = bodies.decode_body(
        await bodies.read_limited(request, bodies.DEFAULT_BODY_LIMIT), bodies.StartRecording
    )
    bodies.check_name(body.destination, "destination", "destination name")
    label = bodies.check_label(body.label)
    destination = await find_destination(deps, tenant_id, name=body.destination)
    recording_id = new_recording_id()
    token = secrets.token_urlsafe(32)
    event = recordings.RecordingStarted(
        event_id=event_id(recording_id, "started"),
        recording_id=recording_id,
        tenant_id=tenant_id,
        occurred_at=now(),
        destination_id=destination.destination_id,
        destination_name=destination.name,
        whip_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
        label=label,
        # The destination decides the output format; the transcoder reads it from this event.
        output_format=str(destination.config.get("output_format") or "webm"),
        output_tracks=str(destination.config.get("output_tracks") or "av"),
    )
    await publish_and_fold(deps, event)
    log.info(
        "recording started",
        extra={"recording_id": recording_id, "tenant_id": tenant_id},
    )
    return json_response(
        {
            "recording_id": recording_id,
            "whip_url": f"{deps.config.whip_base_for(recording_id)}/whip/{recording_id}",
            "token": token,
            "state": "capturing",
            "destination": destination.name,
            "label": label,
        },
        201,
    )


async def stop_recording(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    deps = request.app[DEPS]
    view = await find_recording(deps, tenant_id, request.match_info["recording_id"])
    subject = f"recordings.{view.recording_id}.stop_requested"
    # Deterministic id (dedup within the window) and a state check (beyond it): stops are no-ops
    # once one exists.
    if await natsio.last_event(deps.js, RECORDINGS, subject) is None:
        event = recordings.RecordingStopRequested(
            event_id=event_id(view.recording_id, "stop_requested"),
            recording_id=view.recording_id,
            tenant_id=tenant_id,
            occurred_at=now(),
        )
        await publish_and_fold(deps, event)
        log.info("stop requested", extra={"recording_id": view.recording_id})
    return json_response(
        {"recording_id": view.recording_id, "state": view.state, "stop_requested": True}, 202
    )


async def list_recordings(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    deps = request.app[DEPS]
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "limit must be a whole number; fix the query.", "limit") from None
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ApiError(400, f"limit must be between 1 and {LIST_LIMIT_MAX}.", "limit")
    state = request.query.get("state") or None
    views = await db.list_recordings(deps.pool, tenant_id, limit=limit, state=state)
    return json_response({"recordings": [recording_json(v) for v in views]})


async def show_recording(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    deps = request.app[DEPS]
    view = await find_recording(deps, tenant_id, request.match_info["recording_id"])
    rows, total = await db.recording_events(
        deps.pool, tenant_id, view.recording_id, limit=EVENTS_LIMIT
    )
    out = recording_json(view)
    out["events"] = [event_json(r) for r in rows]
    out["events_total"] = total
    return json_response(out)


async def resend_recording(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    deps = request.app[DEPS]
    view = await find_recording(deps, tenant_id, request.match_info["recording_id"])
    body = bodies.decode_body(
        await bodies.read_limited(request, bodies.DEFAULT_BODY_LIMIT),
        bodies.Resend,
        allow_empty=True,
    )
    if view.state not in RESENDABLE:
        raise ApiError(
            409,
            f"The recording is {view.state}; only uploaded or retained recordings can be resent.",
            "state",
        )
    if body.destination:
        bodies.check_name(body.destination, "destination", "destination name")
        destination = await find_destination(deps, tenant_id, name=body.destination)
    else:
        destination = await find_destination(deps, tenant_id, destination_id=view.destination_id)
    request_id = secrets.token_hex(8)
    event = recordings.ResendRequested(
        event_id=event_id(view.recording_id, "resend_requested", request_id),
        recording_id=view.recording_id,
        tenant_id=tenant_id,
        occurred_at=now(),
        request_id=request_id,
        destination_id=destination.destination_id,
        destination_name=destination.name,
    )
    await publish_and_fold(deps, event)
    log.info("resend requested", extra={"recording_id": view.recording_id})
    return json_response(
        {
            "recording_id": view.recording_id,
            "request_id": request_id,
            "destination": destination.name,
            "state": view.state,
        },
        202,
    )


async def create_destination(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
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
    return json_response(destination_json(view), 201)


async def list_destinations(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    views = await request.app[DEPS].vault.list(tenant_id)
    return json_response({"destinations": [destination_json(v) for v in views]})


async def show_destination(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    name = bodies.check_name(request.match_info["name"], "name", "destination name")
    view = await request.app[DEPS].vault.get(tenant_id, name=name)
    return json_response(destination_json(view))


async def delete_destination(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    name = bodies.check_name(request.match_info["name"], "name", "destination name")
    view = await request.app[DEPS].vault.delete(tenant_id, name=name)
    log.info(
        "destination deleted",
        extra={"tenant_id": tenant_id, "destination_id": view.destination_id},
    )
    return json_response(destination_json(view))


async def test_destination(request: web.Request) -> web.Response:
    """Probe a stored destination: 200 with what was written, confirmed and deleted, or the
    probe's failure (422 with the field to fix, 502/504 when the storage cannot be reached)."""
    tenant_id = tenant_of(request)
    name = bodies.check_name(request.match_info["name"], "name", "destination name")
    reply = await request.app[DEPS].vault.test(tenant_id, name)
    if reply.problem is not None:
        log.info("destination test failed", extra={"tenant_id": tenant_id, "destination": name})
        raise ApiError(reply.problem.status, reply.problem.message, reply.problem.field)
    assert reply.destination is not None and reply.probe is not None
    log.info("destination tested", extra={"tenant_id": tenant_id, "destination": name})
    return json_response(
        {
            "ok": True,
            "destination": destination_json(reply.destination),
            "probe": msgspec.to_builtins(reply.probe),
        }
    )


async def signing_key(request: web.Request) -> web.Response:
    """The manifest-signing public key (PEM) and its key id, for verifying manifest.json.sig."""
    key = request.app[DEPS].signing
    if key is None:
        raise ApiError(503, "The API has no signing key loaded; check its log, then restart it.")
    return json_response(
        {"algorithm": key.algorithm, "key_id": key.key_id, "public_key_pem": key.public_key_pem}
    )


def destination_body_limit(config: ApiConfig) -> int:
    """Only to turn away obviously oversized bodies before anything is read: up to 4 UTF-8 bytes
    per character, plus the name and provider. The vault enforces the real limit."""
    return 4 * config.max_credential_chars + 4096


def build_app(deps: Deps) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware],
        client_max_size=max(bodies.DEFAULT_BODY_LIMIT, destination_body_limit(deps.config)),
    )
    app[DEPS] = deps
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/tenants", create_tenant)
    app.router.add_post("/v1/recordings", start_recording)
    app.router.add_get("/v1/recordings", list_recordings)
    app.router.add_get("/v1/recordings/{recording_id}", show_recording)
    app.router.add_post("/v1/recordings/{recording_id}/stop", stop_recording)
    app.router.add_post("/v1/recordings/{recording_id}/resend", resend_recording)
    app.router.add_post("/v1/destinations", create_destination)
    app.router.add_get("/v1/destinations", list_destinations)
    app.router.add_get("/v1/destinations/{name}", show_destination)
    app.router.add_delete("/v1/destinations/{name}", delete_destination)
    app.router.add_post("/v1/destinations/{name}/test", test_destination)
    app.router.add_get("/v1/keys/signing", signing_key)
    return app
