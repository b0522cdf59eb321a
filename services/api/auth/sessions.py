"""Dashboard sessions: a random cookie (``resguardo_session``: HttpOnly, Secure, SameSite=Strict,
Path=/, Max-Age) whose SHA-256 alone is stored. A session ends at ``RESGUARDO_SESSION_TTL_S``
after sign-in, after ``RESGUARDO_SESSION_IDLE_S`` without a request, at sign-out, or when its
user is removed or disabled; the user's role is read on every request, so a change applies at once.

CSRF: the session's token is derived from the cookie (HMAC-SHA256 keyed by the cookie value), so
nothing more is stored and every API instance computes the same one, while the token (which is
put into pages) reveals nothing of the cookie. The sign-in forms, before any session, use the
same construction over a short-lived pre-session cookie (``resguardo_signin``). Every
state-changing request from a browser must also come from our own origin (``Sec-Fetch-Site``,
``Origin``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import urllib.parse
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from ..roles import Principal
from .users import Conn, _user

COOKIE = "resguardo_session"
SIGNIN_COOKIE = "resguardo_signin"  # the sign-in forms' CSRF cookie, before there is a session
SIGNIN_COOKIE_PATH = "/signin"
SIGNIN_COOKIE_TTL_S = 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_VALUE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
_CSRF_CONTEXT = b"resguardo.csrf.v1"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def new_value() -> str:
    return secrets.token_urlsafe(32)


def is_value(value: str) -> bool:
    return bool(_VALUE_RE.match(value))


def session_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def csrf_for(value: str) -> str:
    """The CSRF token that goes with a (session or pre-session) cookie value."""
    mac = hmac.new(value.encode(), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str
    session_sha256: str


async def create(conn: Conn, user_id: str, ttl_s: int) -> str:
    """A new session for ``user_id``; the cookie value (shown to the browser only)."""
    value = new_value()
    await conn.execute(
        """INSERT INTO api.sessions (session_sha256, user_id, expires_at)
           VALUES ($1, $2, now() + $3 * interval '1 second')""",
        session_hash(value),
        user_id,
        ttl_s,
    )
    return value


async def lookup(pool: asyncpg.Pool, value: str, *, idle_s: int) -> Session | None:
    """The live session behind a cookie value, or None (unknown, expired, idle too long, or its
    user removed or disabled). Marks it seen (at most once a minute, so pages stay cheap)."""
    if not is_value(value):
        return None
    digest = session_hash(value)
    touch_after = min(60, max(1, idle_s // 2)) if idle_s else 60
    row = await pool.fetchrow(
        """SELECT u.user_id, u.tenant_id, u.email, u.role, u.created_at, u.disabled,
                  (u.password_hash IS NOT NULL) AS has_password,
                  s.last_seen_at < now() - $3 * interval '1 second' AS stale
           FROM api.sessions s JOIN api.users u USING (user_id)
           WHERE s.session_sha256 = $1 AND s.expires_at > now() AND NOT u.disabled
             AND ($2 = 0 OR s.last_seen_at > now() - $2 * interval '1 second')""",
        digest,
        idle_s,
        touch_after,
    )
    if row is None:
        return None
    if row["stale"]:
        await pool.execute(
            "UPDATE api.sessions SET last_seen_at = now() WHERE session_sha256 = $1", digest
        )
    return Session(
        principal=_user(row).principal(), csrf_token=csrf_for(value), session_sha256=digest
    )


async def end(conn: Conn, value: str) -> None:
    if is_value(value):
        await conn.execute(
            "DELETE FROM api.sessions WHERE session_sha256 = $1", session_hash(value)
        )


async def end_all(conn: Conn, user_id: str) -> None:
    await conn.execute("DELETE FROM api.sessions WHERE user_id = $1", user_id)


async def prune(conn: Conn, idle_s: int) -> None:
    """Forget sessions that can no longer be used."""
    await conn.execute(
        """DELETE FROM api.sessions
           WHERE expires_at <= now()
              OR ($1 > 0 AND last_seen_at <= now() - $1 * interval '1 second')""",
        idle_s,
    )


# --- cookies ----------------------------------------------------------------------------------


def set_cookie(response: web.StreamResponse, value: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="Strict"
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.set_cookie(
        COOKIE, "", max_age=0, path="/", secure=True, httponly=True, samesite="Strict"
    )


def signin_token(request: web.Request, response_cookies: dict[str, str]) -> str:
    """The sign-in form's CSRF token: from the pre-session cookie the browser holds, or from a
    new one (put into ``response_cookies`` for the caller to set)."""
    value = request.cookies.get(SIGNIN_COOKIE, "")
    if not is_value(value):
        value = new_value()
        response_cookies[SIGNIN_COOKIE] = value
    return csrf_for(value)


def set_signin_cookie(response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        value,
        max_age=SIGNIN_COOKIE_TTL_S,
        path=SIGNIN_COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="Strict",
    )


def clear_signin_cookie(response: web.StreamResponse) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        "",
        max_age=0,
        path=SIGNIN_COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="Strict",
    )


# --- what a state-changing request from a browser must show -----------------------------------


def cross_site(request: web.Request) -> bool:
    """True if the browser says the request comes from another site (or another origin of
    ours: a sibling subdomain is refused too), or its Origin is not the API's own."""
    fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    parsed = urllib.parse.urlsplit(origin.strip())
    return parsed.scheme not in ("https", "http") or parsed.netloc.lower() != request.host.lower()


async def sent_csrf(request: web.Request) -> str:
    """The CSRF token the request carries: the X-CSRF-Token header, else a form's csrf_token
    field (reading the form here leaves it cached for the handler)."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header.strip()
    if request.content_type in _FORM_TYPES:
        form = await request.post()
        value = form.get(CSRF_FIELD)
        return value.strip() if isinstance(value, str) else ""
    return ""


def same_token(sent: str, expected: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())
