"""The dashboard's pages: each reads the read model (``queries``) or the vault, checks the
caller's role on the server, and renders a template. Changes (re-send, destinations) are made by
the pages' forms through the JSON API (``/v1``), with the session's CSRF token, so every rule
the API enforces holds for the dashboard too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from shared.providers import PROVIDERS, fields_of

from .. import audit, listing, query, usage
from ..errors import ApiError
from ..roles import Action, can
from ..state import STATES
from ..web import DEPS, Deps, principal_of, require
from . import live, queries, render

BROADCASTER = web.AppKey("dashboard_broadcaster", live.Broadcaster)
HIDDEN = "(hidden)"


async def recordings_page(request: web.Request) -> web.Response:
    scope = query.scope(request, Action.VIEW_RECORDINGS)  # the role check too; None: every tenant
    deps: Deps = request.app[DEPS]
    state = request.query.get("state", "")
    if state and state not in STATES:
        raise ApiError(422, f"state must be one of {', '.join(STATES)}.", "state")
    destination = request.query.get("destination", "")
    cursor = query.decode_cursor(request, (datetime, str))
    filters = listing.Filters(
        tenant_id=scope,
        states=[state] if state else None,
        destination=destination or None,
        since=query.when(request, "since"),
        until=query.when(request, "until", end=True),
        after=(cursor[0], cursor[1]) if cursor else None,  # type: ignore[arg-type]
    )
    rows, next_cursor = await queries.recordings(deps.pool, filters)
    kept = {k: v for k, v in request.query.items() if k != "cursor" and v}
    return render(
        request,
        "recordings.html",
        rows=rows,
        states=STATES,
        destinations=await queries.destinations_in_use(deps.pool, scope),
        filters={
            "state": state,
            "destination": destination,
            "since": request.query.get("since", ""),
            "until": request.query.get("until", ""),
        },
        next_query={**kept, "cursor": next_cursor} if next_cursor else None,
        first_page=cursor is None,
        across_tenants=scope is None,
    )


def _file_rows(
    view_files: list[Any], events: list[queries.Event], names: bool
) -> list[dict[str, Any]]:
    confirmed: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.type == "upload.file_uploaded":
            f = e.summary.get("file", {})
            confirmed[f.get("name", "")] = f
    out = []
    for i, f in enumerate(view_files, 1):
        remote = confirmed.get(f.name, {})
        out.append(
            {
                "name": f.name if names or f.role != "participant" else f"participant file {i}",
                "role": f.role,
                "size": f.size,
                "size_text": queries.size_text(f.size),
                "sha256": f.sha256,
                "checksum": (
                    f"{remote['checksum_algorithm']} {remote['checksum']}" if remote else ""
                ),
                "remote": (remote.get("uri") or f.remote_uri or "") if names else HIDDEN,
            }
        )
    return out


FAILURES = ("upload.failed", "upload.retained", "transcode.quarantined", "vault.grant_refused")


async def recording_page(request: web.Request) -> web.Response:
    scope = query.scope(request, Action.VIEW_RECORDINGS)  # the role check too; None: every tenant
    principal = principal_of(request)
    deps: Deps = request.app[DEPS]
    rid = request.match_info["recording_id"]
    view = await queries.one(deps.pool, scope, rid)
    if view is None:
        raise ApiError(404, "No recording with this id for your tenant.", "recording_id")
    events = await queries.events(deps.pool, scope, rid)
    names = can(principal, Action.VIEW_PARTICIPANTS)
    roles_of = {f.role for f in view.files}
    return render(
        request,
        "recording.html",
        view=view,
        row=queries.display(await listing.one(deps.pool, view)),
        participants=[
            {
                "name": (p.display_name or p.participant_id) if names else f"participant {i}",
                "tracks": p.tracks,
                "connected": p.connected,
                "joined": p.joined_at,
                "left": p.left_at,
            }
            for i, p in enumerate(view.participants, 1)
        ],
        files=_file_rows(view.files, events, names),
        signature=(
            "signed: manifest.json.sig was delivered with the manifest (check it with "
            "`resguardo verify`)"
            if {"manifest", "signature"} <= roles_of
            else "not sealed yet"
        ),
        timeline=[{"at": e.at, "type": e.type} for e in events],
        failures=[
            {"at": e.at, "type": e.type, "reason": e.summary.get("reason", "")}
            for e in events
            if e.type in FAILURES
        ],
        can_resend=can(principal, Action.RESEND) and view.state in ("uploaded", "retained"),
    )


async def retained_page(request: web.Request) -> web.Response:
    scope = query.scope(request, Action.VIEW_RECORDINGS)  # the role check too; None: every tenant
    principal = principal_of(request)
    deps: Deps = request.app[DEPS]
    held, _ = await queries.recordings(
        deps.pool, listing.Filters(tenant_id=scope, states=["retained"]), limit=500
    )
    others: list[str] = []
    if principal.tenant_id is not None and can(principal, Action.VIEW_DESTINATIONS):
        others = [d.name for d in await deps.vault.list(principal.tenant_id)]
    return render(
        request,
        "retained.html",
        held=held,
        destinations=others,
        can_resend=can(principal, Action.RESEND),
    )


async def usage_page(request: web.Request) -> web.Response:
    deps: Deps = request.app[DEPS]
    report = await usage.report(
        deps.pool,
        query.scope(request, Action.VIEW_USAGE),
        days=30,
        today=datetime.now(UTC).date(),
        default_capacity=deps.config.backup_capacity_bytes,
    )
    return render(
        request,
        "usage.html",
        tenants=[
            {
                **t.to_json(),
                "held": queries.size_text(t.held_bytes),
                "capacity": queries.size_text(t.capacity_bytes),
            }
            for t in report
        ],
    )


async def audit_page(request: web.Request) -> web.Response:
    deps: Deps = request.app[DEPS]
    scope = query.scope(request, Action.VIEW_AUDIT)
    cursor = query.decode_cursor(request, (datetime, str, int))
    rows, more = await audit.entries(
        deps.pool,
        scope,
        limit=50,
        after=(cursor[0], cursor[1], cursor[2]) if cursor else None,  # type: ignore[arg-type]
    )
    next_cursor = query.encode_cursor(*rows[-1].key) if more and rows else None
    return render(
        request,
        "audit.html",
        entries=[e.to_json() for e in rows],
        next_cursor=next_cursor,
        first_page=cursor is None,
    )


def provider_forms() -> list[dict[str, Any]]:
    """One form section per provider, from the same field table the CLI and the vault use."""
    out = []
    for provider in sorted(PROVIDERS):
        fields = []
        for f in fields_of(provider):
            fields.append(
                {
                    "name": f.name,
                    "secret": f.secret,
                    "required": f.required,
                    "type": f.type,
                    "choices": f.choices,
                    "doc": f.doc,
                }
            )
        out.append({"provider": provider, "fields": fields})
    return out


async def destinations_page(request: web.Request) -> web.Response:
    principal = require(request, Action.VIEW_DESTINATIONS)
    deps: Deps = request.app[DEPS]
    if principal.tenant_id is None:
        tenant = request.query.get("tenant_id", "")
        if not tenant:
            return render(
                request,
                "destinations.html",
                destinations=[],
                providers=[],
                can_manage=False,
                can_edit=False,
                limit=0,
                need_tenant=True,
                tenant_id="",
            )
    else:
        tenant = principal.tenant_id
    views = await deps.vault.list(tenant)
    manage = can(principal, Action.MANAGE_DESTINATIONS)
    return render(
        request,
        "destinations.html",
        destinations=[
            {
                "name": d.name,
                "provider": d.provider,
                "config": d.config,
                "secret_fields": d.secret_fields,
                "created": d.created_at,
                "editable": [
                    {"name": f.name, "type": f.type, "value": _shown(d.config.get(f.name))}
                    for f in fields_of(d.provider)
                    if not f.secret
                ],
            }
            for d in views
        ],
        providers=provider_forms() if manage else [],
        can_manage=manage,
        can_edit=can(principal, Action.EDIT_DESTINATION_SETTINGS),
        limit=deps.config.max_credential_chars,
        need_tenant=False,
        tenant_id=tenant,
    )


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


async def live_stream(request: web.Request) -> web.StreamResponse:
    scope = query.scope(request, Action.VIEW_RECORDINGS)  # the role check too; None: every tenant
    deps: Deps = request.app[DEPS]

    def allowed(tenant_id: str) -> bool:
        return scope is None or tenant_id == scope

    async def row_of(tenant_id: str, recording_id: str) -> dict[str, Any] | None:
        return await queries.row(deps.pool, tenant_id, recording_id)

    return await live.stream(request, request.app[BROADCASTER], allowed, row_of)


async def home(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/ui/recordings")


async def _broadcaster(app: web.Application) -> Any:
    deps: Deps = app[DEPS]
    broadcaster = live.Broadcaster(deps.pool)
    await broadcaster.start()
    app[BROADCASTER] = broadcaster
    yield
    await broadcaster.stop()


Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(handler: Page) -> Page:
    """A page's refusals as a page (the API's JSON errors are for programs)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return render(request, "error.html", status=exc.status, message=str(exc.message))

    return wrapped


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/ui", home)
    app.router.add_get("/ui/recordings", page(recordings_page))
    app.router.add_get("/ui/recordings/{recording_id}", page(recording_page))
    app.router.add_get("/ui/retained", page(retained_page))
    app.router.add_get("/ui/destinations", page(destinations_page))
    app.router.add_get("/ui/usage", page(usage_page))
    app.router.add_get("/ui/audit", page(audit_page))
    app.router.add_get("/ui/live", live_stream)
    app.router.add_static("/ui/static/", Path(__file__).parent / "static")
    app.cleanup_ctx.append(_broadcaster)
