"""One-time sign-in links: ``https://<the API's host>/signin/link/<token>``. The token is shown to
whoever made the link (once, in the answer); only its SHA-256 is stored. A link expires after
``RESGUARDO_SIGNIN_LINK_TTL_S`` and works once: setting a password through it consumes it."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .users import Conn, User, _user

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
PATH = "/signin/link/"


def link_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    token: str
    expires_at: datetime

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}{PATH}{self.token}"


async def issue(conn: Conn, user_id: str, ttl_s: int) -> Link:
    token = secrets.token_urlsafe(32)
    expires_at = await conn.fetchval(
        """INSERT INTO api.signin_links (link_sha256, user_id, expires_at)
           VALUES ($1, $2, now() + $3 * interval '1 second') RETURNING expires_at""",
        link_hash(token),
        user_id,
        ttl_s,
    )
    return Link(token=token, expires_at=expires_at)


@dataclass(frozen=True)
class Lookup:
    """What a link is now: ``state`` is "valid", "used", "expired" or "unknown"."""

    state: str
    user: User | None = None


async def peek(conn: Conn, token: str) -> Lookup:
    """The link's state and its user, without consuming it."""
    if not TOKEN_RE.match(token):
        return Lookup("unknown")
    row = await conn.fetchrow(
        """SELECT u.user_id, u.tenant_id, u.email, u.role, u.created_at, u.disabled,
                  (u.password_hash IS NOT NULL) AS has_password,
                  l.used_at IS NOT NULL AS used, l.expires_at <= now() AS expired
           FROM api.signin_links l JOIN api.users u USING (user_id)
           WHERE l.link_sha256 = $1""",
        link_hash(token),
    )
    if row is None:
        return Lookup("unknown")
    user = _user(row)
    if row["used"]:
        return Lookup("used", user)
    if row["expired"]:
        return Lookup("expired", user)
    if user.disabled:
        return Lookup("unknown")
    return Lookup("valid", user)


async def consume(conn: asyncpg.Connection, token: str) -> str | None:
    """Mark the link used, once: the user id, or None if it was used, expired or unknown
    (two requests racing with one link: exactly one gets the id)."""
    if not TOKEN_RE.match(token):
        return None
    value = await conn.fetchval(
        """UPDATE api.signin_links SET used_at = now()
           WHERE link_sha256 = $1 AND used_at IS NULL AND expires_at > now()
           RETURNING user_id""",
        link_hash(token),
    )
    return str(value) if value else None


async def prune(conn: Conn) -> None:
    """Forget links that expired more than a week ago (a used or expired link says so until
    then)."""
    await conn.execute("DELETE FROM api.signin_links WHERE expires_at < now() - interval '7 days'")
