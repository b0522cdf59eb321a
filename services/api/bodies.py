"""Request bodies: decoded strictly, with errors that name the offending field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from shared.ids import is_recording_id, is_safe_name, is_webhook_id

from .errors import ApiError

T = TypeVar("T")

DEFAULT_BODY_LIMIT = 16 * 1024
LABEL_MAX = 200


class StartRecording(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    destination: str
    label: str = ""


class Resend(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    destination: str = ""


class CreateDestination(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    provider: str
    config: dict[str, Any]
    probe: bool = True


class CreateTenant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str


class CreateWebhook(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    events: list[str] = msgspec.field(default_factory=list)  # empty: every type
    description: str = ""


class RotateWebhookSecret(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    grace_s: int | None = None


class Redeliver(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    delivery_id: str = ""
    since: str = ""  # ISO 8601
    endpoint_id: str = ""


_PATH = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_NAMED = re.compile(r"field `([^`]{1,64})`")


def _field_of(error: str) -> str:
    match = _PATH.search(error) or _NAMED.search(error)
    return match.group(1) if match else ""


async def read_limited(request: web.Request, limit: int, what: str = "request body") -> bytes:
    too_big = ApiError(413, f"The {what} is larger than {limit} bytes; send a smaller one.")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(raw: bytes, model: type[T], *, allow_empty: bool = False) -> T:
    if not raw.strip():
        if allow_empty:
            raw = b"{}"
        else:
            raise ApiError(400, "The request needs a JSON object body; send one.")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        # msgspec's messages name types and paths, never the values sent.
        text = str(exc)
        field = _field_of(text)
        detail = text.split(" - at ")[0].rstrip(".")
        raise ApiError(422, f"Invalid request: {detail}; fix it and retry.", field) from None
    except msgspec.DecodeError:
        raise ApiError(400, "The request body is not valid JSON; send a JSON object.") from None


def check_name(value: str, field: str, what: str) -> str:
    if not is_safe_name(value):
        raise ApiError(
            422,
            f"The {what} must be 1-64 letters, digits, '-' or '_', starting with a letter or "
            "digit; choose another.",
            field,
        )
    return value


def check_label(value: str, field: str = "label") -> str:
    if len(value) > LABEL_MAX or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ApiError(
            422,
            f"The {field} must be at most {LABEL_MAX} printable characters; shorten it.",
            field,
        )
    return value


def check_recording_id(value: str) -> str:
    if not is_recording_id(value):
        raise ApiError(
            400,
            "That is not a recording id (they look like rec_ and 24 hex digits); "
            "check it with `resguardo recordings list`.",
            "recording_id",
        )
    return value


def check_webhook_id(value: str) -> str:
    if not is_webhook_id(value):
        raise ApiError(
            400,
            "That is not a webhook endpoint id (they look like wh_ and 16 hex digits); "
            "check it with `resguardo webhooks list`.",
            "endpoint_id",
        )
    return value
