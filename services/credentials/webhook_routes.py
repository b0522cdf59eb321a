"""The ``rpc.vault.webhooks.*`` subjects and their handlers, for ``service.py`` to subscribe
(the handlers themselves are ``webhooks.WebhookEndpoints``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from nats.aio.msg import Msg

from shared.vault_rpc import Problem
from shared.webhook_rpc import (
    SUBJECT_CREATE,
    SUBJECT_DISABLE,
    SUBJECT_GET,
    SUBJECT_LIST,
    SUBJECT_REMOVE,
    SUBJECT_ROTATE,
    SUBJECT_SECRETS,
    WebhookCreate,
    WebhookDisable,
    WebhookListReply,
    WebhookQuery,
    WebhookReply,
    WebhookRotate,
    WebhookSecretsReply,
    WebhookSecretsRequest,
)

from .webhooks import WebhookEndpoints

S = TypeVar("S", bound=msgspec.Struct)


Route = tuple[str, Callable[[Msg], Awaitable[msgspec.Struct]]]


def routes(endpoints: WebhookEndpoints, requester_header: str) -> list[Route]:
    """The ``rpc.vault.webhooks.*`` handlers, for ``service.py`` to subscribe."""

    def decoded(kind: type[S], msg: Msg) -> S:
        return msgspec.json.decode(msg.data, type=kind)

    async def create(msg: Msg) -> msgspec.Struct:
        return await endpoints.create(decoded(WebhookCreate, msg))

    async def list_(msg: Msg) -> msgspec.Struct:
        return await endpoints.list(decoded(WebhookQuery, msg))

    async def get(msg: Msg) -> msgspec.Struct:
        return await endpoints.get(decoded(WebhookQuery, msg))

    async def remove(msg: Msg) -> msgspec.Struct:
        return await endpoints.remove(decoded(WebhookQuery, msg))

    async def rotate(msg: Msg) -> msgspec.Struct:
        return await endpoints.rotate(decoded(WebhookRotate, msg))

    async def disable(msg: Msg) -> msgspec.Struct:
        return await endpoints.disable(decoded(WebhookDisable, msg))

    async def secrets_(msg: Msg) -> msgspec.Struct:
        requester = (msg.headers or {}).get(requester_header, "unknown")[:64]
        return await endpoints.secrets(decoded(WebhookSecretsRequest, msg), requester)

    return [
        (SUBJECT_CREATE, create),
        (SUBJECT_LIST, list_),
        (SUBJECT_GET, get),
        (SUBJECT_REMOVE, remove),
        (SUBJECT_ROTATE, rotate),
        (SUBJECT_DISABLE, disable),
        (SUBJECT_SECRETS, secrets_),
    ]


def failure(subject: str, problem: Problem) -> msgspec.Struct | None:
    """The reply of a failed webhook request, or None for another subject."""
    if subject == SUBJECT_SECRETS:
        return WebhookSecretsReply(problem=problem)
    if subject == SUBJECT_LIST:
        return WebhookListReply(endpoints=[])
    if subject.startswith("rpc.vault.webhooks."):
        return WebhookReply(problem=problem)
    return None
