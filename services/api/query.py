"""Query-string parameters of the list endpoints: page sizes, opaque cursors, dates and times,
recording states, and whose data the caller reads (``scope``). Every refusal is a 400 naming the
parameter."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime, time, timedelta

import msgspec
from aiohttp import web

from shared.ids import TENANT_ID_RE

from .errors import ApiError
from .roles import Action, Principal, can
from .state import STATES
from .web import query_limit, require, tenant_for

PAGE_DEFAULT = 50
PAGE_MAX = 200
CURSOR_MAX = 512

CursorKey = tuple[datetime | str | int, ...]


def page_limit(request: web.Request) -> int:
    return query_limit(request, PAGE_DEFAULT, PAGE_MAX)


# --- cursors ----------------------------------------------------------------------------------


def encode_cursor(*key: datetime | str | int) -> str:
    """The sort key of a page's last row, opaque to clients (base64url of a JSON array)."""
    parts = [k.isoformat() if isinstance(k, datetime) else k for k in key]
    return base64.urlsafe_b64encode(msgspec.json.encode(parts)).rstrip(b"=").decode()


def decode_cursor(
    request: web.Request, shape: tuple[type[datetime] | type[str] | type[int], ...]
) -> CursorKey | None:
    """The ``cursor`` parameter as a key of ``shape`` (None: the first page)."""
    raw = request.query.get("cursor", "")
    if not raw:
        return None
    bad = ApiError(
        400,
        "cursor is not one this API gave out; drop it to start again from the first page.",
        "cursor",
    )
    if len(raw) > CURSOR_MAX:
        raise bad
    try:
        parts = msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad from None
    if not isinstance(parts, list) or len(parts) != len(shape):
        raise bad
    key: list[datetime | str | int] = []
    for kind, value in zip(shape, parts, strict=True):
        if kind is datetime and isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                raise bad from None
            if when.tzinfo is None:
                raise bad
            key.append(when)
        elif kind is int and isinstance(value, int) and not isinstance(value, bool):
            key.append(value)
        elif kind is str and isinstance(value, str):
            key.append(value)
        else:
            raise bad
    return tuple(key)


# --- dates and times --------------------------------------------------------------------------


def when(request: web.Request, name: str, *, end: bool = False) -> datetime | None:
    """An ISO 8601 date (``2026-01-02``: that day, UTC) or date-time (without an offset: UTC).
    ``end``: the bound is exclusive, so a date means the end of that day and a time the
    microsecond after it."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            start = datetime.combine(day, time(), UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            400,
            f"{name} must be an ISO 8601 date or time such as 2026-01-02 or "
            "2026-01-02T03:04:05Z; fix the query.",
            name,
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment + timedelta(microseconds=1) if end else moment


def states(request: web.Request) -> list[str] | None:
    """``state``: one or more recording states, comma separated (or the parameter repeated)."""
    wanted: list[str] = []
    for value in request.query.getall("state", []):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if part not in STATES:
                shown = part if len(part) <= 32 and part.isprintable() else "(that value)"
                raise ApiError(
                    400,
                    f"Unknown state {shown!r}; choose from {', '.join(STATES)} "
                    "(several: comma separated).",
                    "state",
                )
            if part not in wanted:
                wanted.append(part)
    return wanted or None


def whole_number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number; fix the query.", name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}.", name)
    return value


# --- whose data -------------------------------------------------------------------------------


def is_operator(principal: Principal) -> bool:
    """Our staff: no tenant of their own, and the right to see every tenant."""
    return principal.tenant_id is None and can(principal, Action.ACROSS_TENANTS)


def scope(request: web.Request, action: Action) -> str | None:
    """The tenant whose data the caller reads for ``action``: its own; for an operator, the
    ``tenant_id`` parameter, optional here (None: every tenant)."""
    principal = require(request, action)
    if not is_operator(principal):
        return tenant_for(request, action)
    wanted = request.query.get("tenant_id") or None
    if wanted is not None and not TENANT_ID_RE.match(wanted):
        raise ApiError(
            400,
            "tenant_id is not a tenant id (they look like ten_ and 16 hex digits).",
            "tenant_id",
        )
    return wanted
