"""Failed sign-ins, counted per email (as typed, lower-cased) and per client address over a
window, in PostgreSQL so every API instance sees the same counts.

An attempt is counted *before* its password is checked (``begin``) and forgotten when it turns
out right (``succeeded``): a burst of parallel guesses cannot slip past the limit while the slow
hash runs. Past the limit the answer is 429 with ``Retry-After``: when the oldest failure that
keeps the count at the limit leaves the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

from ..errors import ApiError


@dataclass(frozen=True)
class Limits:
    window_s: int = 900
    per_email: int = 5
    per_address: int = 20


class RateLimited(ApiError):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(429, message, "email")
        self.retry_after_s = retry_after_s


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


async def _wait(
    conn: asyncpg.Connection, column: str, value: str, limit: int, window_s: int
) -> int | None:
    """Seconds until ``value`` may try again, or None if it is under its limit."""
    count = await conn.fetchval(
        f"""SELECT count(*) FROM api.signin_attempts
            WHERE {column} = $1 AND at > now() - $2 * interval '1 second'""",  # noqa: S608 (constant)
        value,
        window_s,
    )
    if count < limit:
        return None
    seconds = await conn.fetchval(
        f"""SELECT extract(epoch FROM at + $2 * interval '1 second' - now())
            FROM api.signin_attempts
            WHERE {column} = $1 AND at > now() - $2 * interval '1 second'
            ORDER BY at OFFSET $3 LIMIT 1""",  # noqa: S608 (constant)
        value,
        window_s,
        count - limit,
    )
    return max(1, math.ceil(float(seconds or 1)))


async def begin(pool: asyncpg.Pool, email: str, address: str, limits: Limits) -> int:
    """Count this attempt (as a failure until ``succeeded``); its id. 429 when the email or the
    address is at its limit (nothing is counted then)."""
    async with pool.acquire() as conn, conn.transaction():
        # Always the email's lock first, then the address's: no two sign-ins deadlock.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 14))", email)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 15))", address)
        await conn.execute(
            "DELETE FROM api.signin_attempts WHERE at < now() - $1 * interval '1 second'",
            limits.window_s,
        )
        wait = await _wait(conn, "email", email, limits.per_email, limits.window_s)
        if wait is not None:
            raise RateLimited(
                f"Too many failed sign-ins for this email; wait {_minutes(wait)} and try again "
                "(or ask an admin of your tenant for a new sign-in link).",
                wait,
            )
        wait = await _wait(conn, "address", address, limits.per_address, limits.window_s)
        if wait is not None:
            raise RateLimited(
                f"Too many failed sign-ins from your address; wait {_minutes(wait)} and try again.",
                wait,
            )
        attempt = await conn.fetchval(
            "INSERT INTO api.signin_attempts (email, address) VALUES ($1, $2) RETURNING id",
            email,
            address,
        )
        return int(attempt)


async def succeeded(conn: asyncpg.Pool | asyncpg.Connection, attempt: int, email: str) -> None:
    """The password was right: this attempt and the email's earlier failures are forgotten."""
    await conn.execute(
        "DELETE FROM api.signin_attempts WHERE id = $1 OR email = $2", attempt, email
    )
