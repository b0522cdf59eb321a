"""The WHIP endpoint (RFC 9725) over HTTPS: offer in, answer out, DELETE to leave.

Every refusal is a 4xx/5xx with one plain-text sentence, decided before any media state exists:
the bearer token is checked against the SHA-256 in ``recordings.<rid>.started``, so a token of
one recording opens nothing of another.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from nats.js import JetStreamContext

from shared import natsio
from shared.backup import recording_dir
from shared.events import recordings
from shared.ids import is_recording_id, slugify
from shared.recording_key import RecordingKey, RecordingKeyError

from .errors import WhipRefused
from .media import MAX_SDP_BYTES
from .session import Publish, Sessions, WhipSession

log = logging.getLogger(__name__)

# participant ids leave room in track ids ("<pid>-<8 hex>-video") for SAFE_NAME_RE's 64 chars
MAX_PARTICIPANT_ID = 40
MAX_DISPLAY_NAME = 200
# CORS (so a page on another origin can publish): on every response, preflight included.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Allow, Retry-After",
    "Access-Control-Max-Age": "600",
}
ENDPOINT_ALLOW = "POST, OPTIONS"  # /whip/<rid>: the WHIP endpoint
SESSION_ALLOW = "DELETE, OPTIONS"  # /whip/<rid>/<sid>: a WHIP session (no trickle: no PATCH)
RETRY_AFTER_S = 10

SESSIONS_KEY = web.AppKey("sessions", Sessions)
JS_KEY = web.AppKey("js", JetStreamContext)
PUBLISH_KEY: web.AppKey[Publish] = web.AppKey("publish")
BACKUP_KEY = web.AppKey("backup_root", Path)
FetchKey = Callable[[str, str, str], Awaitable[RecordingKey]]  # (recording, tenant, purpose)
FETCH_KEY: web.AppKey[FetchKey] = web.AppKey("fetch_key")


def text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


@web.middleware
async def errors_and_cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except WhipRefused as exc:
        response = text(exc.status, str(exc))
        if exc.status == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
    except web.HTTPException as exc:
        if exc.status == 413:
            response = text(413, f"The SDP offer is larger than {MAX_SDP_BYTES} bytes.")
        elif exc.status == 405:
            response = text(405, f"{request.method} is not allowed on this WHIP URL.")
            allow = [m.strip() for m in exc.headers.get("Allow", "").split(",")]
            # PATCH is routed only to answer 405 itself: it is not an allowed method
            response.headers["Allow"] = ", ".join(m for m in allow if m and m != "PATCH")
        elif exc.status == 404:
            response = text(404, "Not found; WHIP endpoints are /whip/<recording_id>.")
        else:
            raise
    for k, v in CORS_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def check_recording_id(rid: str) -> str:
    if not is_recording_id(rid):
        raise WhipRefused(404, "No such recording: the URL must be /whip/<recording_id>.")
    return rid


def bearer_token(request: web.Request) -> str:
    raw = request.headers.get("Authorization", "")
    scheme, _, token = raw.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise WhipRefused(
            401, "Missing bearer token; send 'Authorization: Bearer <token>' for this recording."
        )
    return token


async def authorize(
    js: JetStreamContext, recording_id: str, token: str
) -> recordings.RecordingStarted:
    """The recording's start event, if ``token`` is its WHIP token (else 401/404)."""
    started = await natsio.last_event(js, recordings.STREAM, f"recordings.{recording_id}.started")
    if not isinstance(started, recordings.RecordingStarted):
        raise WhipRefused(404, "No such recording; check the WHIP URL you were given.")
    offered = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
    if not hmac.compare_digest(offered, started.whip_token_sha256.lower()):
        raise WhipRefused(401, "The bearer token is not valid for this recording.")
    return started


def participant_from(query: str | None) -> tuple[str, str]:
    """(participant_id, display_name) from ``?participant=``; refuses path-like names."""
    if query is None or query.strip() == "":
        return "p-" + secrets.token_hex(3), ""
    name = query.strip()
    if len(name) > MAX_DISPLAY_NAME:
        raise WhipRefused(400, f"The participant name is longer than {MAX_DISPLAY_NAME} chars.")
    if (
        any(unicodedata.category(ch).startswith("C") for ch in name)
        or "/" in name
        or "\\" in name
        or ".." in name
    ):
        raise WhipRefused(
            400,
            "The participant name has control characters, slashes or '..'; "
            "use letters, digits, spaces, '-' or '_'.",
        )
    pid = slugify(name, fallback="")[:MAX_PARTICIPANT_ID].rstrip("-_")
    if not pid:
        pid = "p-" + secrets.token_hex(3)
    return pid, name


async def read_offer(request: web.Request) -> str:
    ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/sdp":
        raise WhipRefused(415, "The offer must be sent with 'Content-Type: application/sdp'.")
    if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
        raise WhipRefused(413, f"The SDP offer is larger than {MAX_SDP_BYTES} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_SDP_BYTES:
            raise WhipRefused(413, f"The SDP offer is larger than {MAX_SDP_BYTES} bytes.")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WhipRefused(400, "The SDP offer is not UTF-8 text.") from None
    if "\x00" in offer or not offer.lstrip().startswith("v=0"):
        raise WhipRefused(400, "The body is not an SDP offer (it must start with 'v=0').")
    return offer


async def post_offer(request: web.Request) -> web.Response:
    rid = check_recording_id(request.match_info["rid"])
    token = bearer_token(request)
    offer = await read_offer(request)
    js = request.app[JS_KEY]
    started = await authorize(js, rid, token)
    stop = await natsio.last_event(js, recordings.STREAM, f"recordings.{rid}.stop_requested")
    if stop is not None:
        raise WhipRefused(410, "This recording has been stopped; start a new recording.")
    participant_id, display_name = participant_from(request.query.get("participant"))
    sessions = request.app[SESSIONS_KEY]
    sessions.check_admission(rid, participant_id)
    rec_dir = recording_dir(request.app[BACKUP_KEY], started.tenant_id, rid)
    publish: Publish = request.app[PUBLISH_KEY]
    try:
        # One request per session: the vault audits it, and the session wipes its copy at end.
        key = await request.app[FETCH_KEY](rid, started.tenant_id, "capture")
    except RecordingKeyError as exc:
        log.warning("no recording key", extra={"recording_id": rid, "reason": str(exc)})
        if exc.transient:
            raise WhipRefused(
                503, "The proxy could not get this recording's key; try again."
            ) from None
        raise WhipRefused(410, "This recording can no longer be recorded.") from None
    session = WhipSession(
        registry=sessions,
        recording_id=rid,
        tenant_id=started.tenant_id,
        participant_id=participant_id,
        display_name=display_name,
        rec_dir=rec_dir,
        publish=publish,
        key=key,
    )
    try:
        sessions.add(session)
    except WhipRefused:
        await session.end("refused")
        raise
    try:
        answer = await session.negotiate(offer)
        if session.ending or rid in sessions.stopped:
            raise WhipRefused(410, "This recording has been stopped; start a new recording.")
        await session.announce()
    except WhipRefused:
        await session.end("offer refused")
        raise
    except Exception:
        was_ending = session.ending
        await session.end("offer refused")
        if was_ending:  # stopped while negotiating
            raise WhipRefused(
                410, "This recording has been stopped; start a new recording."
            ) from None
        log.exception("session setup failed", extra={"recording_id": rid})
        raise WhipRefused(500, "The proxy could not set up the session; try again.") from None
    except BaseException:
        session.end("request cancelled")
        raise
    log.info(
        "session started",
        extra={
            "recording_id": rid,
            "session_id": session.session_id,
            "participant_id": participant_id,
        },
    )
    return web.Response(
        status=201,
        body=answer.encode(),
        headers={
            "Content-Type": "application/sdp",
            "Location": session.location,
            "ETag": session.etag,
        },
    )


async def delete_session(request: web.Request) -> web.Response:
    rid = check_recording_id(request.match_info["rid"])
    token = bearer_token(request)
    await authorize(request.app[JS_KEY], rid, token)
    session = request.app[SESSIONS_KEY].get(rid, request.match_info["sid"])
    if session is None:
        raise WhipRefused(404, "No such WHIP session; it has already ended.")
    await session.end("publisher left (DELETE)")
    return web.Response(status=200, text="session ended\n")


def no_trickle(allow: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """PATCH (trickle ICE, ICE restart): 405 with ``Allow``, as RFC 9725 4.3.1 allows."""

    async def patch(request: web.Request) -> web.Response:
        return web.Response(
            status=405,
            text="Trickle ICE and ICE restarts are not supported; "
            "send the offer after ICE gathering completes.\n",
            headers={"Allow": allow},
        )

    return patch


def options(allow: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """OPTIONS: the CORS preflight (headers added by the middleware) and what the URL takes."""

    async def handle(request: web.Request) -> web.Response:
        headers = {"Allow": allow}
        if "POST" in allow:
            headers["Accept-Post"] = "application/sdp"
        return web.Response(status=204, headers=headers)

    return handle


async def healthz(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS_KEY]
    received, written = sessions.frame_totals()
    return web.json_response(
        {
            "status": "ok",
            "sessions": len(sessions.by_id),
            "peer_connections": sessions.open_peer_connections,
            "frames_received": received,
            "frames_written": written,
        }
    )


def build_app(
    *,
    sessions: Sessions,
    js: JetStreamContext,
    publish: Publish,
    backup_root: Path,
    fetch_key: FetchKey,
) -> web.Application:
    app = web.Application(middlewares=[errors_and_cors], client_max_size=MAX_SDP_BYTES)
    app[SESSIONS_KEY] = sessions
    app[JS_KEY] = js
    app[PUBLISH_KEY] = publish
    app[BACKUP_KEY] = backup_root
    app[FETCH_KEY] = fetch_key
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/whip/{rid}", post_offer)
    app.router.add_options("/whip/{rid}", options(ENDPOINT_ALLOW))
    app.router.add_route("PATCH", "/whip/{rid}", no_trickle(ENDPOINT_ALLOW))
    app.router.add_delete("/whip/{rid}/{sid}", delete_session)
    app.router.add_route("PATCH", "/whip/{rid}/{sid}", no_trickle(SESSION_ALLOW))
    app.router.add_options("/whip/{rid}/{sid}", options(SESSION_ALLOW))
    return app
