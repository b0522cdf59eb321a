"""``/v1/webhooks``: a tenant's webhook endpoints (kept by the vault), their deliveries (folded
from WEBHOOKS) and redeliveries on demand.

An endpoint's signing secret is made here (``whsec_...``), sealed to the vault's key bound to
the tenant and endpoint (``webhook_rpc.secret_context``), and shown once: in the answer to the
create or the rotation that made it. It is never logged, never stored by the API, never in an
event. URLs are checked against the SSRF policy (``services.notifier.targets``) when registered;
the notifier checks every delivery's address again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from services.notifier.signing import generate_secret
from services.notifier.targets import TargetPolicy, TargetRefused
from shared import webhook_rpc as rpc
from shared.events import event_id, now, recordings
from shared.events.webhooks import WEBHOOK_TYPES
from shared.ids import new_webhook_id
from shared.sealedbox import seal

from .. import audit, bodies, deliveries
from ..config import ApiConfig
from ..errors import ApiError
from ..roles import Action
from ..web import DEPS, Deps, json_response, publish_and_fold, query_limit, read_body, tenant_for

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 10.0
REDELIVER_MAX = 500  # deliveries one `redeliver --since` call asks for
DESCRIPTION_MAX = bodies.LABEL_MAX
_DELIVERY_ID = re.compile(r"^[0-9a-f]{32}$")


def _audit_detail(view: rpc.WebhookView) -> str:
    """What the audit trail says of an endpoint: its host, never its path or query (which may
    carry the receiver's token), never a secret."""
    host = urlsplit(view.url).hostname or "?"
    return f"to {host}, " + (", ".join(view.events) if view.events else "every event type")


def endpoint_json(view: rpc.WebhookView) -> dict[str, Any]:
    out = msgspec.to_builtins(view)
    assert isinstance(out, dict)
    return out


# --- checks -----------------------------------------------------------------------------------


def check_events(events: list[str]) -> list[str]:
    """The subscribed types, each once, in the order given (empty: every type)."""
    out: list[str] = []
    for value in events:
        if value not in WEBHOOK_TYPES:
            shown = value if len(value) <= 64 and value.isprintable() else "(that value)"
            raise ApiError(
                422,
                f"Unknown event type {shown!r}; choose from {', '.join(WEBHOOK_TYPES)} "
                "(or send none for all of them).",
                "events",
            )
        if value not in out:
            out.append(value)
    return out


async def check_url(config: ApiConfig, url: str) -> str:
    """The URL if it may be registered now (its rules, and an allowed address in DNS)."""
    policy = TargetPolicy(allow_private=config.webhook_allow_private)
    remedy = "use a public https:// URL"
    try:
        parsed = policy.check_url(url)
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            await policy.check_target(parsed)
    except TargetRefused as exc:
        raise ApiError(422, f"The webhook URL is refused: {exc}; {remedy}.", "url") from None
    except TimeoutError:
        raise ApiError(
            422,
            f"The webhook URL's host did not resolve within {RESOLVE_TIMEOUT_S:.0f} s; "
            "check the name, then retry.",
            "url",
        ) from None
    except OSError:
        raise ApiError(
            422, "The webhook URL's host does not resolve; check the name, then retry.", "url"
        ) from None
    return url


def check_delivery_id(value: str) -> str:
    if not _DELIVERY_ID.match(value):
        raise ApiError(
            400,
            "That is not a delivery id (32 hex digits); list them with "
            "`resguardo webhooks deliveries`.",
            "delivery_id",
        )
    return value


def parse_time(value: str, field: str) -> datetime:
    """An ISO 8601 time; one without an offset is UTC."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ApiError(
            422,
            f"{field} must be an ISO 8601 time such as 2026-01-02T03:04:05Z; fix it.",
            field,
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _grace(value: int | None) -> int:
    if value is None:
        return rpc.DEFAULT_GRACE_S
    if not 0 <= value <= rpc.MAX_GRACE_S:
        raise ApiError(
            422,
            f"grace_s must be between 0 and {rpc.MAX_GRACE_S} seconds (7 days); fix it.",
            "grace_s",
        )
    return value


async def _new_secret(deps: Deps, tenant_id: str, endpoint_id: str) -> tuple[str, bytes]:
    """A new secret, revealed (for the one answer that shows it) and sealed to the vault."""
    key = await deps.vault.public_key()
    secret = generate_secret()
    revealed = secret.reveal()
    sealed = seal(key, revealed.encode(), rpc.secret_context(tenant_id, endpoint_id))
    del secret
    return revealed, sealed


# --- endpoints --------------------------------------------------------------------------------


async def create_webhook(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.MANAGE_WEBHOOKS)
    deps = request.app[DEPS]
    body = await read_body(request, bodies.CreateWebhook)
    events = check_events(body.events)
    description = bodies.check_label(body.description, "description")
    url = await check_url(deps.config, body.url)
    endpoint_id = new_webhook_id()
    revealed, sealed = await _new_secret(deps, tenant_id, endpoint_id)
    try:
        view = await deps.webhooks.create(
            rpc.WebhookCreate(
                tenant_id=tenant_id,
                endpoint_id=endpoint_id,
                url=url,
                events=events,
                description=description,
                sealed_secret=sealed,
            )
        )
    except ApiError:
        deps.vault.forget_key()  # in case the vault's key changed; the next request re-reads it
        raise
    # Never the URL (its query may carry the receiver's token), never the secret.
    log.info("webhook endpoint created", extra={"tenant_id": tenant_id, "endpoint_id": endpoint_id})
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="webhook_created",
        target=endpoint_id,
        detail=_audit_detail(view),
    )
    return json_response({"endpoint": endpoint_json(view), "secret": revealed}, 201)


async def list_webhooks(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.MANAGE_WEBHOOKS)
    views = await request.app[DEPS].webhooks.list(tenant_id)
    return json_response({"endpoints": [endpoint_json(v) for v in views]})


async def show_webhook(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.MANAGE_WEBHOOKS)
    endpoint_id = bodies.check_webhook_id(request.match_info["endpoint_id"])
    view = await request.app[DEPS].webhooks.get(tenant_id, endpoint_id)
    return json_response({"endpoint": endpoint_json(view)})


async def remove_webhook(request: web.Request) -> web.Response:
    tenant_id = tenant_for(request, Action.MANAGE_WEBHOOKS)
    endpoint_id = bodies.check_webhook_id(request.match_info["endpoint_id"])
    view = await request.app[DEPS].webhooks.remove(tenant_id, endpoint_id)
    log.info("webhook endpoint removed", extra={"tenant_id": tenant_id, "endpoint_id": endpoint_id})
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="webhook_removed",
        target=endpoint_id,
        detail=_audit_detail(view),
    )
    return json_response({"endpoint": endpoint_json(view)})


async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret; the old one keeps signing next to it for ``grace_s`` (default a day)."""
    tenant_id = tenant_for(request, Action.MANAGE_WEBHOOKS)
    deps = request.app[DEPS]
    endpoint_id = bodies.check_webhook_id(request.match_info["endpoint_id"])
    body = await read_body(request, bodies.RotateWebhookSecret, allow_empty=True)
    grace_s = _grace(body.grace_s)
    revealed, sealed = await _new_secret(deps, tenant_id, endpoint_id)
    try:
        view = await deps.webhooks.rotate(
            rpc.WebhookRotate(
                tenant_id=tenant_id, endpoint_id=endpoint_id, sealed_secret=sealed, grace_s=grace_s
            )
        )
    except ApiError:
        deps.vault.forget_key()
        raise
    log.info(
        "webhook secret rotated",
        extra={"tenant_id": tenant_id, "endpoint_id": endpoint_id, "grace_s": grace_s},
    )
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="webhook_secret_rotated",
        target=endpoint_id,
        detail=f"{_audit_detail(view)}; the old secret signs for {grace_s} s more",
    )
    return json_response({"endpoint": endpoint_json(view), "secret": revealed})


# --- deliveries -------------------------------------------------------------------------------


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ApiError(400, f"{name} must be true or false; fix the query.", name)


async def list_deliveries(request: web.Request) -> web.Response:
    """The tenant's deliveries, newest first: ``endpoint_id``, ``failed=true`` (gave up, or the
    last attempt failed), ``since`` (ISO 8601, when queued) and ``limit`` narrow them."""
    tenant_id = tenant_for(request, Action.MANAGE_WEBHOOKS)
    deps = request.app[DEPS]
    endpoint_id = request.query.get("endpoint_id") or None
    if endpoint_id is not None:
        bodies.check_webhook_id(endpoint_id)
    since_raw = request.query.get("since") or ""
    since = parse_time(since_raw, "since") if since_raw else None
    rows = await deliveries.list_deliveries(
        deps.pool,
        tenant_id,
        limit=query_limit(request),
        endpoint_id=endpoint_id,
        failed=_flag(request, "failed"),
        since=since,
    )
    return json_response({"deliveries": [d.to_json() for d in rows]})


async def _sendable(deps: Deps, tenant_id: str, endpoint_id: str) -> None:
    """Refuse a redelivery to an endpoint that is gone or disabled."""
    try:
        view = await deps.webhooks.get(tenant_id, endpoint_id)
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise ApiError(
            409,
            "The endpoint of this delivery was removed; nothing can be redelivered to it.",
            "endpoint_id",
        ) from None
    if not view.enabled:
        raise ApiError(
            409,
            "The endpoint of this delivery is disabled; add its URL again to re-enable it.",
            "endpoint_id",
        )


async def redeliver(request: web.Request) -> web.Response:
    """Ask the notifier to send deliveries again: one (``delivery_id``, in any state), or every
    one that gave up since a time (``since``, optionally of one ``endpoint_id``)."""
    tenant_id = tenant_for(request, Action.MANAGE_WEBHOOKS)
    deps = request.app[DEPS]
    body = await read_body(request, bodies.Redeliver)
    if bool(body.delivery_id) == bool(body.since):
        raise ApiError(
            422,
            "Send either delivery_id, or since (with an optional endpoint_id); not both.",
            "delivery_id",
        )
    more = False
    if body.delivery_id:
        if body.endpoint_id:
            raise ApiError(
                422, "endpoint_id goes with since, not with delivery_id; drop it.", "endpoint_id"
            )
        delivery_id = check_delivery_id(body.delivery_id)
        found = await deliveries.get_delivery(deps.pool, tenant_id, delivery_id)
        if found is None:
            raise ApiError(
                404,
                "No delivery with this id for your tenant; list them with "
                "`resguardo webhooks deliveries`.",
                "delivery_id",
            )
        await _sendable(deps, tenant_id, found.endpoint_id)
        chosen = [found]
    else:
        since = parse_time(body.since, "since")
        endpoint_id = bodies.check_webhook_id(body.endpoint_id) if body.endpoint_id else None
        if endpoint_id is not None:
            await deps.webhooks.get(tenant_id, endpoint_id)  # 404 naming endpoint_id
        live = {e.endpoint_id for e in await deps.webhooks.list(tenant_id) if e.enabled}
        found_all = await deliveries.given_up_since(
            deps.pool, tenant_id, since, endpoint_id=endpoint_id, limit=REDELIVER_MAX + 1
        )
        chosen = [d for d in found_all if d.endpoint_id in live]
        more = len(chosen) > REDELIVER_MAX
        chosen = chosen[:REDELIVER_MAX]
    request_id = secrets.token_hex(8)
    for d in chosen:
        await publish_and_fold(
            deps,
            recordings.WebhookRedeliveryRequested(
                event_id=event_id(
                    d.recording_id, "webhook_redelivery_requested", request_id, d.delivery_id
                ),
                recording_id=d.recording_id,
                tenant_id=tenant_id,
                occurred_at=now(),
                request_id=request_id,
                delivery_id=d.delivery_id,
                endpoint_id=d.endpoint_id,
            ),
        )
    log.info(
        "webhook redelivery requested",
        extra={"tenant_id": tenant_id, "request_id": request_id, "deliveries": len(chosen)},
    )
    await audit.note(
        request,
        tenant_id=tenant_id,
        action="webhook_redelivery_requested",
        target=request_id,
        detail=f"{len(chosen)} deliveries" + (" (more left)" if more else ""),
    )
    requested = [d.delivery_id for d in chosen]
    return json_response({"request_id": request_id, "requested": requested, "more": more}, 202)


def add_routes(app: web.Application) -> None:
    # The fixed paths first: "deliveries" and "redeliver" are no endpoint ids.
    app.router.add_get("/v1/webhooks/deliveries", list_deliveries)
    app.router.add_post("/v1/webhooks/redeliver", redeliver)
    app.router.add_post("/v1/webhooks", create_webhook)
    app.router.add_get("/v1/webhooks", list_webhooks)
    app.router.add_get("/v1/webhooks/{endpoint_id}", show_webhook)
    app.router.add_delete("/v1/webhooks/{endpoint_id}", remove_webhook)
    app.router.add_post("/v1/webhooks/{endpoint_id}/rotate-secret", rotate_secret)
