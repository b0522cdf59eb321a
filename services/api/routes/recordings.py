"""``/v1/recordings``: start, stop, list, show and resend recordings. Starting, stopping and
resending publish on RECORDINGS (the API's own stream) and fold the event at once."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

import msgspec
from aiohttp import web

from shared import natsio
from shared import vault_rpc as rpc
from shared.events import event_id, now, recordings
from shared.ids import new_recording_id

from .. import bodies, db
from ..errors import ApiError
from ..projection import RecordingView, apply
from ..state import RESENDABLE
from ..web import (
    DEPS,
    RECORDINGS,
    Deps,
    json_response,
    publish_and_fold,
    query_limit,
    read_body,
    tenant_of,
)

log = logging.getLogger(__name__)

EVENTS_LIMIT = 1000

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


# --- helpers ----------------------------------------------------------------------------------


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


async def start_recording(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    deps = request.app[DEPS]
    body = await read_body(request, bodies.StartRecording)
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
    limit = query_limit(request)
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
    body = await read_body(request, bodies.Resend, allow_empty=True)
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


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/recordings", start_recording)
    app.router.add_get("/v1/recordings", list_recordings)
    app.router.add_get("/v1/recordings/{recording_id}", show_recording)
    app.router.add_post("/v1/recordings/{recording_id}/stop", stop_recording)
    app.router.add_post("/v1/recordings/{recording_id}/resend", resend_recording)
