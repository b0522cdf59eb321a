"""The notifier's questions to the vault about endpoints (never their secrets: see
``secret_lease``). Vault trouble is ``VaultUnavailable``: the caller retries later."""

from __future__ import annotations

import time
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from shared.recording_key import REQUESTER_HEADER
from shared.webhook_rpc import (
    SUBJECT_DISABLE,
    SUBJECT_GET,
    SUBJECT_LIST,
    WebhookDisable,
    WebhookListReply,
    WebhookQuery,
    WebhookReply,
    WebhookView,
)

R = TypeVar("R")


class VaultUnavailable(Exception):
    pass


# An endpoint removed or disabled is seen by deliveries within this long (a delivery already
# under way finishes); without it every delivery would cost the vault a database query.
VIEW_TTL_S = 5.0


class Endpoints:
    def __init__(self, nc: NATS, *, timeout_s: float = 5.0, view_ttl_s: float = VIEW_TTL_S) -> None:
        self._nc = nc
        self._timeout = timeout_s
        self._ttl = view_ttl_s
        self._views: dict[str, tuple[float, WebhookView | None]] = {}

    async def _ask(self, subject: str, payload: msgspec.Struct, reply: type[R]) -> R:
        try:
            msg = await self._nc.request(
                subject,
                msgspec.json.encode(payload),
                timeout=self._timeout,
                headers={REQUESTER_HEADER: "notifier"},
            )
            return msgspec.json.decode(msg.data, type=reply)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise VaultUnavailable(f"the vault did not answer ({type(exc).__name__})") from None
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise VaultUnavailable("the vault's answer could not be read") from None

    async def subscribed(self, tenant_id: str, webhook_type: str) -> list[WebhookView]:
        """The tenant's enabled endpoints that take ``webhook_type``."""
        query = WebhookQuery(tenant_id=tenant_id, event_type=webhook_type)
        return (await self._ask(SUBJECT_LIST, query, WebhookListReply)).endpoints

    async def get(self, tenant_id: str, endpoint_id: str) -> WebhookView | None:
        """The endpoint, or None when it no longer exists (as of at most ``view_ttl_s`` ago)."""
        cached = self._views.get(endpoint_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        view = await self._fetch(tenant_id, endpoint_id)
        if len(self._views) > 10_000:
            self._views.clear()
        self._views[endpoint_id] = (now + self._ttl, view)
        return view

    def forget(self, endpoint_id: str) -> None:
        self._views.pop(endpoint_id, None)

    async def _fetch(self, tenant_id: str, endpoint_id: str) -> WebhookView | None:
        query = WebhookQuery(tenant_id=tenant_id, endpoint_id=endpoint_id)
        reply = await self._ask(SUBJECT_GET, query, WebhookReply)
        if reply.problem is not None:
            if reply.problem.status == 404:
                return None
            raise VaultUnavailable(reply.problem.message)
        return reply.endpoint

    async def disable(self, tenant_id: str, endpoint_id: str, reason: str) -> None:
        request = WebhookDisable(tenant_id=tenant_id, endpoint_id=endpoint_id, reason=reason)
        self.forget(endpoint_id)
        reply = await self._ask(SUBJECT_DISABLE, request, WebhookReply)
        if reply.problem is not None and reply.problem.status != 404:
            raise VaultUnavailable(reply.problem.message)
