"""``api.users``: who may sign in to the dashboard, with which role, in which tenant.

Emails are unique case-insensitively (sign-in is by email alone, so one address is one person
across every tenant). Operators belong to no tenant; every other role to exactly one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from ..errors import ApiError
from ..roles import USER_ROLES, Principal

USER_ID_RE = re.compile(r"^usr_[0-9a-f]{16}$")
EMAIL_MAX = 254
# Deliberately loose (the link or the password proves the address): one @, a dot in the domain,
# no spaces or control characters.
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+$")
TENANT_ROLES = tuple(r for r in USER_ROLES if r != "operator")


def new_user_id() -> str:
    return "usr_" + secrets.token_hex(8)


def normalize_email(value: str) -> str:
    """What emails are compared by (and what the rate limit counts): trimmed, lower-case."""
    return value.strip().lower()


def check_email(value: str, field: str = "email") -> str:
    email = value.strip()
    if not email or len(email) > EMAIL_MAX or not _EMAIL.match(email):
        raise ApiError(422, "The email must be an address such as ana@example.com; fix it.", field)
    return email


def check_role(value: str, field: str = "role") -> str:
    if value not in USER_ROLES:
        raise ApiError(
            422, f"The role must be one of {', '.join(USER_ROLES)}; choose one of them.", field
        )
    return value


def is_user_id(value: str) -> bool:
    return bool(USER_ID_RE.match(value))


@dataclass(frozen=True)
class User:
    user_id: str
    tenant_id: str | None
    email: str
    role: str
    created_at: datetime
    disabled: bool
    has_password: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "email": self.email,
            "role": self.role,
            "tenant_id": self.tenant_id,
            "created_at": self.created_at,
            "disabled": self.disabled,
            "has_password": self.has_password,
        }

    def principal(self) -> Principal:
        return Principal(
            role=self.role,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            email=self.email,
            via="session",
        )


_COLUMNS = (
    "user_id, tenant_id, email, role, created_at, disabled, "
    "(password_hash IS NOT NULL) AS has_password"
)
Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection


def _user(row: asyncpg.Record) -> User:
    return User(
        user_id=row["user_id"],
        tenant_id=row["tenant_id"],
        email=row["email"],
        role=row["role"],
        created_at=row["created_at"],
        disabled=row["disabled"],
        has_password=row["has_password"],
    )


async def tenant_exists(conn: Conn, tenant_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM api.tenants WHERE tenant_id = $1", tenant_id))


async def create(
    conn: Conn,
    *,
    tenant_id: str | None,
    email: str,
    role: str,
    password_hash: str | None,
) -> User | None:
    """The new user; None if the email is taken (by anyone, in any tenant)."""
    row = await conn.fetchrow(
        f"""INSERT INTO api.users (user_id, tenant_id, email, role, password_hash)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT ((lower(email))) DO NOTHING
            RETURNING {_COLUMNS}""",  # noqa: S608 (constant)
        new_user_id(),
        tenant_id,
        email,
        role,
        password_hash,
    )
    return _user(row) if row else None


async def find(conn: Conn, ref: str, *, tenant_id: str | None, every: bool = False) -> User | None:
    """A user by id or email, within ``tenant_id`` (or anywhere, with ``every``)."""
    column = "user_id" if is_user_id(ref) else "lower(email)"
    value = ref if is_user_id(ref) else normalize_email(ref)
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM api.users
            WHERE {column} = $1 AND ($2 OR tenant_id IS NOT DISTINCT FROM $3)""",  # noqa: S608
        value,
        every,
        tenant_id,
    )
    return _user(row) if row else None


async def for_sign_in(conn: Conn, email: str) -> tuple[User, str | None] | None:
    """The user with this email and their password hash (None: nobody has it)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, password_hash FROM api.users WHERE lower(email) = $1",  # noqa: S608
        normalize_email(email),
    )
    return (_user(row), row["password_hash"]) if row else None


async def list_users(conn: Conn, *, tenant_id: str | None, every: bool = False) -> list[User]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM api.users
            WHERE $1 OR tenant_id IS NOT DISTINCT FROM $2
            ORDER BY tenant_id NULLS FIRST, lower(email)""",  # noqa: S608 (constant)
        every,
        tenant_id,
    )
    return [_user(r) for r in rows]


async def delete(conn: Conn, user_id: str) -> bool:
    """Remove the user; their sessions and links go with them (ON DELETE CASCADE)."""
    return bool(
        await conn.fetchval("DELETE FROM api.users WHERE user_id = $1 RETURNING true", user_id)
    )


async def set_role(conn: Conn, user_id: str, role: str) -> User | None:
    row = await conn.fetchrow(
        f"UPDATE api.users SET role = $2 WHERE user_id = $1 RETURNING {_COLUMNS}",  # noqa: S608
        user_id,
        role,
    )
    return _user(row) if row else None


async def set_password_hash(conn: Conn, user_id: str, password_hash: str) -> None:
    await conn.execute(
        "UPDATE api.users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
    )
