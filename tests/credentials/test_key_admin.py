"""Master key rotation, rewrap and retirement (``services.credentials.admin``, what
``resguardo keys`` runs), against the real database while a real vault keeps serving."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from services.credentials import admin, crypto
from services.credentials.keys import KeyRing, parse_master_keys
from shared.ids import new_recording_id, new_tenant_id
from tests.servers import ServiceProcess

from .helpers import VaultClient, publish_attempt, publish_started

CANARY = "CANARY-rotate-5e1f0a9c"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


def key_file(tmp_path: Path) -> Path:
    return tmp_path / "vault-data" / "keys" / "master.keys"


async def rows(pool: asyncpg.Pool, tenant: str) -> dict[str, Any]:
    return {
        r["destination_id"]: (bytes(r["ciphertext"]), bytes(r["wrapped_key"]), r["key_version"])
        for r in await pool.fetch(
            "SELECT destination_id, ciphertext, wrapped_key, key_version FROM vault.destinations "
            "WHERE tenant_id = $1",
            tenant,
        )
    }


async def create(client: VaultClient, tenant: str, name: str) -> str:
    reply = await client.create(
        tenant,
        name,
        "s3",
        {"bucket": "b-" + name, "access_key_id": "AKIDROTATE", "secret_access_key": CANARY},
    )
    assert reply.destination is not None, reply.problem
    return reply.destination.destination_id


async def granted_secret(
    client: VaultClient, js: JetStreamContext, tenant: str, dest: str
) -> dict[str, Any]:
    rid = new_recording_id()
    await publish_started(js, rid, tenant, dest)
    await publish_attempt(js, rid, tenant, dest, f"{rid}:1")
    reply, grant = await client.grant(
        job_id=f"{rid}:1", recording_id=rid, tenant_id=tenant, destination_id=dest
    )
    assert grant is not None, reply.problem
    return grant.secret


async def test_rotate_rewrap_retire_while_the_vault_runs(
    client: VaultClient,
    js: JetStreamContext,
    vault_proc: ServiceProcess,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = admin.KeySource(env_value="", key_file=key_file(tmp_path))
    tenant = new_tenant_id()
    old = [await create(client, tenant, f"d{i}") for i in range(3)]
    before = await rows(pool, tenant)
    assert {v for _, _, v in before.values()} == {1}

    with pytest.raises(admin.KeyAdminError, match="newest"):
        await admin.retire(pool, source, 1)

    rotated = admin.rotate(source)
    assert (rotated.new_version, rotated.versions) == (2, [1, 2])
    assert key_file(tmp_path).stat().st_mode & 0o777 == 0o600
    # The running vault wraps new data keys under version 2 at once: no restart.
    fresh = await create(client, tenant, "after-rotate")
    assert (await rows(pool, tenant))[fresh][2] == 2

    with pytest.raises(admin.KeyAdminError, match="3 destination data key"):
        await admin.retire(pool, source, 1)

    # Rewrap never opens a secret: make that path explode, and it still works.
    def no_secrets(*_a: object, **_k: object) -> bytearray:
        raise AssertionError("rewrap decrypted a credential")

    monkeypatch.setattr(crypto, "decrypt_secret", no_secrets)
    seen: list[tuple[int, int]] = []
    result = await admin.rewrap(
        pool, source.load(), on_progress=lambda d, t: seen.append((d, t)), batch=2
    )
    monkeypatch.undo()
    assert result.ok and (result.destinations.to_rewrap, result.destinations.rewrapped) == (3, 3)
    assert result.destinations.by_version == {2: 4}
    assert seen[-1] == (3, 3)
    after = await rows(pool, tenant)
    for dest in old:
        assert after[dest][0] == before[dest][0]  # the ciphertext itself is untouched
        assert after[dest][1] != before[dest][1] and after[dest][2] == 2

    again = await admin.rewrap(pool, source.load())
    assert (again.destinations.to_rewrap, again.destinations.rewrapped) == (0, 0)

    # The vault opens rewrapped rows (it re-read the key file), before and after retirement.
    assert (await granted_secret(client, js, tenant, old[0]))["secret_access_key"] == CANARY
    retired = await admin.retire(pool, source, 1)
    assert (retired.retired, retired.versions) == (1, [2])
    on_disk = parse_master_keys(key_file(tmp_path).read_text(), "test")
    assert sorted(on_disk.keys) == [2]
    assert (await granted_secret(client, js, tenant, old[1]))["secret_access_key"] == CANARY
    with pytest.raises(admin.KeyAdminError, match="not in"):
        await admin.retire(pool, source, 1)
    with pytest.raises(admin.KeyAdminError, match="newest"):
        await admin.retire(pool, source, 2)
    assert CANARY not in vault_proc.log_path.read_text()


async def test_rewrap_reports_rows_whose_version_is_missing(
    client: VaultClient, vault_proc: ServiceProcess, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    tenant = new_tenant_id()
    dest = await create(client, tenant, "lost")
    # Keys that do not include version 1 (as if it had been retired too early).
    other = {2: os.urandom(32)}
    text = "\n".join(f"{v}:{base64.b64encode(k).decode()}" for v, k in other.items())
    keys = parse_master_keys(text, "test")
    result = await admin.rewrap(pool, keys)
    assert not result.ok and result.unknown_version == {1: 1}
    assert (await rows(pool, tenant))[dest][2] == 1  # left as it was


def test_rotate_refuses_environment_keys_and_missing_files(tmp_path: Path) -> None:
    env_keys = f"1:{base64.b64encode(os.urandom(32)).decode()}"
    with pytest.raises(admin.KeyAdminError, match="RESGUARDO_MASTER_KEYS"):
        admin.rotate(admin.KeySource(env_value=env_keys, key_file=tmp_path / "k"))
    with pytest.raises(admin.KeyAdminError, match="no master key file"):
        admin.rotate(admin.KeySource(env_value="", key_file=tmp_path / "absent.keys"))
    assert not (tmp_path / "absent.keys").exists()  # never created by the tool


def test_key_ring_rereads_the_file_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.keys"
    ring = KeyRing("", path)  # creates version 1
    first = ring.current()
    assert first.newest == 1 and ring.current() is first  # unchanged file: no re-read
    admin.rotate(admin.KeySource(env_value="", key_file=path))
    assert ring.current().newest == 2
    # A broken file keeps the last good keys (and the vault keeps working).
    path.write_text("garbage\n")
    assert ring.current().newest == 2
    env_ring = KeyRing(f"7:{base64.b64encode(os.urandom(32)).decode()}", path)
    path.write_text(f"9:{base64.b64encode(os.urandom(32)).decode()}\n")
    assert env_ring.current().newest == 7  # environment keys never change underneath
