"""API tokens: only their SHA-256 is stored; the admin and dev tokens live in 0600 files.

At start the API makes sure ``<data_dir>/secrets/admin-token`` and the dev tenant's
``<data_dir>/secrets/dev-api-token`` exist and are known to the database (a fresh database with
old files re-registers the files' tokens; nothing is ever regenerated while its file exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from pathlib import Path

import asyncpg

from shared.ids import TENANT_ID_RE, new_tenant_id

from . import db

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name)
DEV_TOKEN_FILE = "dev-api-token"  # noqa: S105 (a file name)
DEV_TENANT_ID_FILE = "dev-tenant-id"
DEV_TENANT = "dev"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def secrets_dir(data_dir: Path) -> Path:
    return data_dir / "secrets"


def write_secret_file(path: Path, value: str) -> None:
    """Atomically write ``value`` to ``path`` with mode 0600 in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_secret_file(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def _file_token(path: Path) -> str:
    """The token in ``path``, creating the file first if it is missing."""
    token = read_secret_file(path)
    if token is None:
        token = new_token()
        write_secret_file(path, token)
    return token


async def bootstrap(pool: asyncpg.Pool, data_dir: Path) -> None:
    """Ensure the admin token and the dev tenant (with its token) exist, files and rows alike.

    Files are written before their rows are inserted: a crash in between leaves a file that the
    next start registers. The dev tenant's id is kept in a file too, so a rebuilt database (the
    read model replayed from the streams) gives the dev token the same tenant and its recordings.
    """
    directory = secrets_dir(data_dir)
    admin = _file_token(directory / ADMIN_TOKEN_FILE)
    dev = _file_token(directory / DEV_TOKEN_FILE)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('resguardo.api.bootstrap'))")
        await db.ensure_token(conn, token_hash(admin), "admin", None)
        dev_hash = token_hash(dev)
        existing = await conn.fetchrow(
            "SELECT role, tenant_id FROM api.tokens WHERE token_sha256 = $1", dev_hash
        )
        if existing is None:
            id_file = directory / DEV_TENANT_ID_FILE
            wanted = read_secret_file(id_file)
            if wanted is None or not TENANT_ID_RE.match(wanted):
                wanted = await db.tenant_by_name(conn, DEV_TENANT) or new_tenant_id()
                write_secret_file(id_file, wanted)
            tenant_id = await db.ensure_tenant(conn, DEV_TENANT, wanted)
            if tenant_id != wanted:
                log.warning(
                    "the dev tenant in the database differs from the one in the data dir; "
                    "using the database's",
                    extra={"tenant_id": tenant_id, "file_tenant_id": wanted},
                )
            await db.ensure_token(conn, dev_hash, "tenant", tenant_id)
    del admin, dev
