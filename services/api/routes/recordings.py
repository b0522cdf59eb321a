"""``/v1/recordings``: start, stop, list, show and resend recordings. Starting, stopping and
resending publish on RECORDINGS (the API's own stream) and fold the event at once."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from shared import natsio
from shared import vault_rpc as rpc
from shared.events import event_id, now, recordings
from shared.ids import is_safe_name, new_recording_id

from .. import audit, bodies, db, listing, query
from ..errors import ApiError
from ..projection import RecordingView, apply
from ..roles import Action, can
from ..state import RESENDABLE
from ..web import (
    DEPS,
    RECORDINGS,
    Deps,
    hide_names,
    json_response,
    principal_of,
    publish_and_fold,
    read_body,
    tenant_for,
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
    tenant_id = tenant_for(request, Action.START_RECORDING)
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
    tenant_id = tenant_for(request, Action.START_RECORDING)
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


def row_json(row: listing.Row) -> dict[str, Any]:
    """A recording as the lists show it: its view and what the dashboard's table adds."""
    return recording_json(row.view) | row.fields()


def list_filters(request: web.Request, tenant_id: str | None) -> listing.Filters:
    """The filters of ``GET /v1/recordings`` (``/v1/retained`` too); 400s name the parameter."""
    destination = request.query.get("destination") or None
    if destination is not None and not is_safe_name(destination):
        raise ApiError(400, "destination must be a destination's name or id.", "destination")
    since, until = query.when(request, "since"), query.when(request, "until", end=True)
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "until must be after since; fix the query.", "until")
    after = query.decode_cursor(request, (datetime, str))
    key: tuple[datetime, str] | None = None
    if after is not None:
        at, recording_id = after
        assert isinstance(at, datetime) and isinstance(recording_id, str)
        key = (at, recording_id)
    return listing.Filters(
        tenant_id=tenant_id,
        states=query.states(request),
        destination=destination,
        since=since,
        until=until,
        after=key,
    )


async def list_page(
    request: web.Request, filters: listing.Filters, key: str = "recordings"
) -> web.Response:
    limit = query.page_limit(request)
    rows, more = await listing.page(request.app[DEPS].pool, filters, limit)
    last = rows[-1].view if rows and more else None
    next_cursor = query.encode_cursor(last.created_at, last.recording_id) if last else None
    shown = [_for_caller(request, row_json(r)) for r in rows]
    return json_response({key: shown, "next_cursor": next_cursor})


def _for_caller(request: web.Request, recording: dict[str, Any]) -> dict[str, Any]:
    """Without participants' names, or files' hashes and remote locations, for a caller who
    may not see them (operators)."""
    hide_names(request, recording)
    if not can(principal_of(request), Action.VIEW_FILES):
        for f in recording["files"]:
            f["sha256"], f["remote_uri"] = "", None
    return recording


async def list_recordings(request: web.Request) -> web.Response:
    """Newest first, ``limit`` (50, at most 200) a page; ``cursor`` (the last page's
    ``next_cursor``), ``state`` (comma separated), ``destination`` (name or id), ``since`` and
    ``until`` (on created_at) and, for operators, ``tenant_id`` narrow them."""
    tenant_id = query.scope(request, Action.VIEW_RECORDINGS)
    return await list_page(request, list_filters(request, tenant_id))


async def show_recording(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.VIEW_RECORDINGS)
    deps = request.app[DEPS]
    view = await find_recording(deps, tenant_id, request.match_info["recording_id"])
    rows, total = await db.recording_events(
        deps.pool, tenant_id, view.recording_id, limit=EVENTS_LIMIT
    )
    out = row_json(await listing.one(deps.pool, view))
    out["events"] = [event_json(r) for r in rows]
    out["events_total"] = total
    return json_response(_for_caller(request, out))  # no participants' names for operators


async def resend_recording(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.RESEND)
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
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="resend_requested",
        target=view.recording_id,
        detail=f"to {destination.name} ({destination.destination_id}), request {request_id}",
    )
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
