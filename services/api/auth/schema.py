"""The dashboard's people in PostgreSQL (schema ``api``): users, one-time sign-in links, sessions
and failed sign-in attempts. Links and sessions are stored only as the SHA-256 of what the user
holds; passwords only as argon2id hashes. Attempts are rows (not process memory) so that the rate
limit holds across every API instance."""

from __future__ import annotations

import asyncpg

SCHEMA = """
CREATE TABLE IF NOT EXISTS api.users (
    user_id       text PRIMARY KEY,
    tenant_id     text REFERENCES api.tenants (tenant_id),  -- NULL: an operator (our staff)
    email         text NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'operator')),
    password_hash text,                                      -- argon2id; NULL until one is set
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled      boolean NOT NULL DEFAULT false,
    CHECK ((role = 'operator') = (tenant_id IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email ON api.users (lower(email));
CREATE INDEX IF NOT EXISTS users_by_tenant ON api.users (tenant_id);
CREATE TABLE IF NOT EXISTS api.signin_links (
    link_sha256 text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES api.users (user_id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX IF NOT EXISTS signin_links_by_expiry ON api.signin_links (expires_at);
CREATE TABLE IF NOT EXISTS api.sessions (
    session_sha256 text PRIMARY KEY,
    user_id        text NOT NULL REFERENCES api.users (user_id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON api.sessions (expires_at);
CREATE INDEX IF NOT EXISTS sessions_by_user ON api.sessions (user_id);
CREATE TABLE IF NOT EXISTS api.signin_attempts (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    email   text NOT NULL,   -- lower-cased, as typed (it may belong to nobody)
    address text NOT NULL    -- the client's address
);
CREATE INDEX IF NOT EXISTS signin_attempts_by_email ON api.signin_attempts (email, at);
CREATE INDEX IF NOT EXISTS signin_attempts_by_address ON api.signin_attempts (address, at);
CREATE INDEX IF NOT EXISTS signin_attempts_by_at ON api.signin_attempts (at);
"""


async def migrate(conn: asyncpg.Connection) -> None:
    """Called by ``db.migrate`` inside its transaction, after ``api.tenants`` exists."""
    await conn.execute(SCHEMA)
