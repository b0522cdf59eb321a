"""The vault as a real process over real NATS and PostgreSQL, driven as the API drives it."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from services.credentials import aead, crypto
from services.credentials.keys import load_master_keys
from shared.embedded import NatsServer
from shared.ids import new_tenant_id
from shared.vault_rpc import DestinationReply, create_context
from tests.servers import ServiceProcess

from .helpers import VaultClient, start_vault, wait_ready

CANARY = "CANARY-7f3a9e51-secret-do-not-leak"


def s3_config(**extra: object) -> dict[str, object]:
    return {
        "bucket": "recordings",
        "endpoint_url": "http://127.0.0.1:9",
        "region": "eu-west-1",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": CANARY,
        **extra,
    }


def ok(reply: DestinationReply) -> DestinationReply:
    assert reply.problem is None, reply.problem
    assert reply.destination is not None
    return reply


async def dump_vault_tables(database_url: str) -> str:
    """Every column of every table in schema vault, as text: what a pg_dump would reveal."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'vault'"
        )
        out: list[str] = []
        for t in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM vault."{t["table_name"]}" t')
            out.extend(r["row"] for r in rows)
            # bytea columns also as raw bytes decoded leniently (text form is hex).
            cols = await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'vault' AND table_name = $1 AND data_type = 'bytea'",
                t["table_name"],
            )
            for c in cols:
                for r in await conn.fetch(
                    f'SELECT "{c["column_name"]}" AS v FROM vault."{t["table_name"]}"'
                ):
                    out.append(bytes(r["v"]).decode("latin-1"))
        return "\n".join(out)
    finally:
        await conn.close()


async def test_create_list_get_delete(client: VaultClient) -> None:
    tenant = new_tenant_id()
    created = ok(await client.create(tenant, "main-bucket", "s3", s3_config())).destination
    assert created is not None
    assert created.destination_id.startswith("dst_")
    assert created.config == {
        "bucket": "recordings",
        "endpoint_url": "http://127.0.0.1:9",
        "region": "eu-west-1",
    }
    assert created.secret_fields == ["access_key_id", "secret_access_key"]
    assert CANARY not in repr(created) and created.fingerprint

    listed = await client.list(tenant)
    assert [d.destination_id for d in listed.destinations] == [created.destination_id]
    by_name = ok(await client.get(tenant, name="main-bucket")).destination
    by_id = ok(await client.get(tenant, destination_id=created.destination_id)).destination
    assert by_name == by_id == created

    deleted = ok(await client.delete(tenant, name="main-bucket")).destination
    assert deleted is not None and deleted.destination_id == created.destination_id
    gone = await client.get(tenant, destination_id=created.destination_id)
    assert gone.problem is not None and (gone.problem.status, gone.problem.field) == (
        404,
        "destination",
    )
    again = await client.delete(tenant, name="main-bucket")
    assert again.problem is not None and again.problem.status == 404
    assert (await client.list(tenant)).destinations == []


async def test_file_destination_has_no_secret(client: VaultClient) -> None:
    tenant = new_tenant_id()
    d = ok(
        await client.create(tenant, "local", "file", {"path": "/srv/rec", "persist_backup": True})
    ).destination
    assert d is not None
    assert d.secret_fields == [] and d.config == {"path": "/srv/rec", "persist_backup": True}


@pytest.mark.parametrize(
    ("provider", "config", "field"),
    [
        ("s3", s3_config(bogus="x"), "config.bogus"),
        ("s3", {k: v for k, v in s3_config().items() if k != "bucket"}, "config.bucket"),
        (
            "s3",
            {k: v for k, v in s3_config().items() if k != "access_key_id"},
            "config.access_key_id",
        ),
        ("s3", s3_config(path_style="yes"), "config.path_style"),
        ("s3", s3_config(verify="never"), "config.verify"),
        ("file", {"path": 3}, "config.path"),
        ("gopher", {"host": "x"}, "provider"),
        ("s3", ["not", "an", "object"], "config"),
    ],
)
async def test_invalid_config_is_422_naming_the_field(
    client: VaultClient, provider: str, config: object, field: str
) -> None:
    reply = await client.create(new_tenant_id(), "dest", provider, config)
    assert reply.destination is None and reply.problem is not None
    assert (reply.problem.status, reply.problem.field) == (422, field)
    assert CANARY not in reply.problem.message


@pytest.mark.parametrize("name", ["", "../etc", "a b", "x" * 65, "-lead", "dot.name", "ü"])
async def test_unsafe_name_is_422(client: VaultClient, name: str) -> None:
    reply = await client.create(new_tenant_id(), name, "file", {"path": "/x"})
    assert reply.problem is not None and (reply.problem.status, reply.problem.field) == (
        422,
        "name",
    )


async def test_config_sealed_for_another_name_does_not_open(client: VaultClient) -> None:
    tenant = new_tenant_id()
    reply = await client.create(
        tenant, "one", "s3", s3_config(), context=create_context(tenant, "other")
    )
    assert reply.problem is not None
    assert (reply.problem.status, reply.problem.field) == (400, "sealed_config")


async def test_duplicate_name_is_409(client: VaultClient) -> None:
    tenant = new_tenant_id()
    ok(await client.create(tenant, "dup", "s3", s3_config()))
    reply = await client.create(tenant, "dup", "s3", s3_config())
    assert reply.problem is not None and (reply.problem.status, reply.problem.field) == (
        409,
        "name",
    )
    # The same name under another tenant is another destination.
    ok(await client.create(new_tenant_id(), "dup", "s3", s3_config()))


async def test_over_5000_characters_is_413(client: VaultClient) -> None:
    tenant = new_tenant_id()
    big = "s" * 5000
    reply = await client.create(tenant, "big", "s3", s3_config(secret_access_key=big))
    assert reply.problem is not None
    assert (reply.problem.status, reply.problem.field) == (413, "config")
    assert "RESGUARDO_MAX_CREDENTIAL_CHARS" in reply.problem.message
    assert big not in reply.problem.message
    # Just under the limit is fine: it is the secret part's JSON that is counted.
    fits = "s" * (5000 - len('{"access_key_id":"AKIDEXAMPLE","secret_access_key":""}'))
    ok(await client.create(tenant, "fits", "s3", s3_config(secret_access_key=fits)))


async def test_raising_the_limit_by_env_allows_more(
    tmp_path: Path, nats_server: NatsServer, database_url: str, nc: NATS
) -> None:
    proc = start_vault(
        tmp_path, nats_server.url, database_url, name="bigvault", max_credential_chars="20000"
    )
    try:
        await wait_ready(nc, proc)
        client = VaultClient(nc)
        d = ok(
            await client.create(
                new_tenant_id(), "big", "s3", s3_config(secret_access_key="s" * 9000)
            )
        ).destination
        assert d is not None
    finally:
        proc.stop()


async def test_tenants_never_see_each_other(client: VaultClient) -> None:
    alice, mallory = new_tenant_id(), new_tenant_id()
    d = ok(await client.create(alice, "shared-name", "s3", s3_config())).destination
    assert d is not None
    assert (await client.list(mallory)).destinations == []
    for kwargs in ({"destination_id": d.destination_id}, {"name": "shared-name"}):
        got = await client.get(mallory, **kwargs)
        assert got.destination is None and got.problem is not None and got.problem.status == 404
        deleted = await client.delete(mallory, **kwargs)
        assert deleted.destination is None and deleted.problem is not None
        assert deleted.problem.status == 404
    # Both ids together must match one row of that tenant.
    assert ok(await client.get(alice, destination_id=d.destination_id, name="shared-name"))
    mixed = await client.get(alice, destination_id="dst_0000000000000000", name="shared-name")
    assert mixed.problem is not None and mixed.problem.status == 404
    assert ok(await client.get(alice, destination_id=d.destination_id))


async def test_canary_is_never_stored_or_logged_in_clear(
    client: VaultClient, vault_proc: ServiceProcess, database_url: str, tmp_path: Path
) -> None:
    tenant = new_tenant_id()
    a = ok(await client.create(tenant, "a", "s3", s3_config(session_token=CANARY + "-token")))
    ok(await client.create(tenant, "b", "s3", s3_config()))
    await client.create(tenant, "a", "s3", s3_config())  # 409: a failure path too
    await client.create(tenant, "c", "s3", s3_config(bogus=CANARY))  # 422 on an unknown field
    dump = await dump_vault_tables(database_url)
    assert "AKIDEXAMPLE" not in dump and CANARY not in dump
    assert a.destination is not None and a.destination.destination_id in dump  # dump is real

    # The ciphertext opens with the vault's key file, and only in its own row.
    keys = load_master_keys("", tmp_path / "vault-data" / "keys" / "master.keys")
    conn = await asyncpg.connect(database_url)
    try:
        rows = {
            r["name"]: r
            for r in await conn.fetch(
                "SELECT * FROM vault.destinations WHERE tenant_id = $1", tenant
            )
        }
    finally:
        await conn.close()
    ra, rb = rows["a"], rows["b"]
    plain = crypto.decrypt_secret(
        keys, tenant, ra["destination_id"], ra["ciphertext"], ra["wrapped_key"], ra["key_version"]
    )
    assert CANARY.encode() in plain
    with pytest.raises(aead.AeadError):  # a's secret moved into b's row
        crypto.decrypt_secret(
            keys,
            tenant,
            rb["destination_id"],
            ra["ciphertext"],
            ra["wrapped_key"],
            ra["key_version"],
        )
    with pytest.raises(aead.AeadError):  # a's ciphertext with b's wrapped key
        crypto.decrypt_secret(
            keys,
            tenant,
            ra["destination_id"],
            ra["ciphertext"],
            rb["wrapped_key"],
            ra["key_version"],
        )
    log = vault_proc.log_path.read_text()
    assert "destination created" in log  # the log is the real one
    assert CANARY not in log and "AKIDEXAMPLE" not in log


async def test_schema_creation_is_idempotent_across_restarts(
    tmp_path: Path, nats_server: NatsServer, database_url: str, nc: NATS
) -> None:
    first = start_vault(tmp_path, nats_server.url, database_url, name="v1")
    second = start_vault(tmp_path, nats_server.url, database_url, name="v2")
    try:
        await wait_ready(nc, first)
        await wait_ready(nc, second)
        assert first.alive() and second.alive()
    finally:
        first.stop()
        second.stop()
