"""``GET /v1/audit``: the API's own entries (destination and webhook changes, re-sends, capacity
changes, key rotations) merged with the vault's (grants and recording keys, folded from VAULT),
newest first, a page at a time; per tenant; never a secret. Real API, vault, NATS, PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from services.api import audit, audit_local
from shared.events import event_id, vault
from shared.events.base import Event

from . import factories as f
from .support import ApiProcess, VaultProcess, dev_tenant_id
from .test_destinations import s3_body
from .test_pagination import publish_folded
from .test_webhooks import PUBLIC_URL

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def vault_events(rid: str, tenant_id: str) -> list[Event]:
    env = {"recording_id": rid, "tenant_id": tenant_id}
    return [
        vault.GrantIssued(
            **env,  # type: ignore[arg-type]
            event_id=event_id(rid, "grant", "job1"),
            occurred_at=T0,
            job_id="job1",
            destination_id="dst_00000000000000aa",
            requester="uploader",
            key_version=2,
        ),
        vault.GrantRefused(
            **env,  # type: ignore[arg-type]
            event_id=event_id(rid, "refused", "job2"),
            occurred_at=T0 + timedelta(minutes=1),
            job_id="job2",
            destination_id="dst_00000000000000aa",
            requester="uploader",
            reason="the destination was deleted",
        ),
        vault.RecordingKeyIssued(
            **env,  # type: ignore[arg-type]
            event_id=event_id(rid, "key", "job3"),
            occurred_at=T0 + timedelta(minutes=2),
            job_id="job3",
            purpose="capture",
            requester="proxy",
            key_version=2,
            created=True,
        ),
        vault.RecordingKeyDestroyed(
            **env,  # type: ignore[arg-type]
            event_id=event_id(rid, "destroyed"),
            occurred_at=T0 + timedelta(minutes=3),
            reason="the backup was purged",
        ),
        # A destination test's grant: the read model skips it, so the trail does too.
        vault.GrantIssued(
            **{**env, "recording_id": f.started(tenant_id).recording_id},  # type: ignore[arg-type]
            event_id=event_id(rid, "probe-grant"),
            occurred_at=T0 + timedelta(minutes=4),
            job_id="probe-job",
            destination_id="dst_00000000000000aa",
            requester="uploader",
            probe=True,
        ),
    ]


async def test_the_vaults_grants_and_keys_are_in_the_trail(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    rid = f.started(dev).recording_id
    await publish_folded(js, database_url, vault_events(rid, dev))
    r = await api.request("GET", "/v1/audit")
    assert r.status == 200, r.text
    got = [(e["action"], e["actor"], e["target"], e["detail"]) for e in r.body["entries"]]
    dst, v2 = "destination dst_00000000000000aa", "master key version 2"
    assert got == [
        ("recording_key_destroyed", "vault", rid, "the backup was purged"),
        ("recording_key_issued", "proxy", rid, f"job job3, for capture, {v2}, new key"),
        ("grant_refused", "uploader", rid, f"job job2, {dst}: the destination was deleted"),
        ("grant_issued", "uploader", rid, f"job job1, {dst}, {v2}"),
    ]
    assert {e["source"] for e in r.body["entries"]} == {"vault"}
    assert {e["tenant_id"] for e in r.body["entries"]} == {dev}
    assert r.body["entries"][0]["at"].startswith("2026-03-01T12:03:00")
    assert r.body["next_cursor"] is None
    r = await api.request("GET", "/v1/audit?since=2026-03-01T12:02:00Z")
    assert [e["action"] for e in r.body["entries"]] == [
        "recording_key_destroyed",
        "recording_key_issued",
    ]
    _, other = await api.create_tenant("other")
    r = await api.request("GET", "/v1/audit", token=other)
    assert r.status == 200 and r.body["entries"] == []


async def test_changes_and_resends_are_recorded_without_secrets(
    api: ApiProcess, vault: VaultProcess, js: Any, tmp_path: Path, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    canary = "CANARY-" + secrets.token_hex(8)
    r = await api.request("POST", "/v1/destinations", json=s3_body("archive", canary))
    assert r.status == 201, r.text
    dest_id = r.body["destination_id"]
    r = await api.request("POST", "/v1/webhooks", json={"url": PUBLIC_URL})
    assert r.status == 201, r.text
    endpoint_id, secret = r.body["endpoint"]["endpoint_id"], r.body["secret"]
    r = await api.request("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret", json={})
    assert r.status == 200, r.text
    rotated = r.body["secret"]
    assert (await api.request("DELETE", f"/v1/webhooks/{endpoint_id}")).status == 200

    rec = f.started(dev)
    rid = rec.recording_id
    await publish_folded(
        js,
        database_url,
        [rec, f.closed(rid, dev), f.sealed(rid, dev), f.attempt(rid, dev), f.retained(rid, dev)],
    )
    r = await api.request("POST", f"/v1/recordings/{rid}/resend", json={"destination": "archive"})
    assert r.status == 202, r.text
    request_id = r.body["request_id"]
    assert (await api.request("DELETE", "/v1/destinations/archive")).status == 200

    r = await api.request("GET", "/v1/audit")
    assert r.status == 200, r.text
    entries = [e for e in r.body["entries"] if e["source"] == "api"]
    got = [(e["action"], e["target"]) for e in entries]
    assert got == [
        ("destination_deleted", "archive"),
        ("resend_requested", rid),
        ("webhook_removed", endpoint_id),
        ("webhook_secret_rotated", endpoint_id),
        ("webhook_created", endpoint_id),
        ("destination_added", "archive"),
    ]
    by_action = {e["action"]: e for e in entries}
    assert by_action["resend_requested"]["detail"] == (
        f"to archive ({dest_id}), request {request_id}"
    )
    assert by_action["webhook_created"]["detail"] == "to 1.1.1.1, every event type"
    assert by_action["destination_added"]["detail"] == f"s3, {dest_id}"
    assert by_action["destination_deleted"]["detail"].endswith("its key destroyed")
    assert {e["actor"] for e in entries} == {"tenant token"}
    assert {e["tenant_id"] for e in entries} == {dev}
    for hidden in (canary, secret, rotated, secret.removeprefix("whsec_"), "receiver-token"):
        assert hidden not in r.text
    rows = await asyncpg_fetch(database_url, "SELECT * FROM api.audit_log")
    assert all(canary not in str(dict(x)) and secret not in str(dict(x)) for x in rows)


async def test_pages_of_both_sources_newest_first(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    rid = f.started(dev).recording_id
    await publish_folded(js, database_url, vault_events(rid, dev))
    pool = await asyncpg.create_pool(database_url)
    assert pool is not None
    try:
        conn: Any = pool
        for minutes, action in [(30, "sign_in"), (150, "sign_out"), (90, "destination_added")]:
            await audit.audit_log.record(
                conn,
                tenant_id=dev,
                actor="ana@example.com",
                action=action,
                at=T0 + timedelta(seconds=minutes),
            )
        # the same instant from both sources: the order is still total (and stable)
        await audit.audit_log.record(conn, tenant_id=dev, actor="x", action="tie", at=T0)
        await audit.audit_log.record(conn, tenant_id=None, actor="admin token", action="global")
    finally:
        await pool.close()
    seen: list[str] = []
    url = "/v1/audit?limit=2"
    while True:
        r = await api.request("GET", url)
        assert r.status == 200, r.text
        assert len(r.body["entries"]) <= 2
        seen += [e["action"] for e in r.body["entries"]]
        if not r.body["next_cursor"]:
            break
        url = f"/v1/audit?limit=2&cursor={r.body['next_cursor']}"
    assert seen == [
        "recording_key_destroyed",
        "sign_out",
        "recording_key_issued",
        "destination_added",
        "grant_refused",
        "sign_in",
        "grant_issued",
        "tie",
    ]  # a tenant never sees entries of no tenant ("global")


async def test_bad_parameters_name_the_field(api: ApiProcess) -> None:
    for q, field in [
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("cursor=xyz", "cursor"),
        ("cursor=WyIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgInJlY19hIl0", "cursor"),  # 2 parts
        ("since=soon", "since"),
        ("tenant_id=ten_00000000000000ff", "tenant_id"),
    ]:
        r = await api.request("GET", f"/v1/audit?{q}")
        assert 400 <= r.status < 500 and r.error["field"] == field, (q, r.text)
    r = await api.request("GET", "/v1/audit", token="admin")
    assert r.status == 403


async def test_key_rotations_are_recorded_when_the_api_schema_is_there(
    api: ApiProcess, database_url: str, postgres_server: Any
) -> None:
    assert await audit_local.record_local(
        database_url, actor="resguardo keys (root)", action="master_key_rotated", detail="v3"
    )
    pool = await asyncpg.create_pool(database_url)
    assert pool is not None
    try:
        rows, more = await audit.entries(pool, None, limit=10)
    finally:
        await pool.close()
    assert [(e.action, e.actor, e.detail, e.tenant_id) for e in rows] == [
        ("master_key_rotated", "resguardo keys (root)", "v3", None)
    ]
    assert not more
    # A database without the API's schema (the vault's own), or none at all: no entry, no error.
    record = audit_local.record_local
    assert not await record(postgres_server.url, actor="x", action="y")
    assert not await record("postgresql://127.0.0.1:1/none", actor="x", action="y")


async def asyncpg_fetch(url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_the_keys_tool_records_rotate_rewrap_and_retire(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path, database_url: str
) -> None:
    from tests.cli.test_cli import ok_json
    from tests.cli.test_keys_cli import key_env

    env = key_env(api, tmp_path, database_url)
    assert ok_json(env, "keys", "rotate")["new_version"] == 2
    assert ok_json(env, "keys", "rewrap")["ok"] is True
    assert ok_json(env, "keys", "retire", "1")["retired"] == 1
    pool = await asyncpg.create_pool(database_url)
    assert pool is not None
    try:
        rows, _ = await audit.entries(pool, None, limit=10)
    finally:
        await pool.close()
    assert [(e.action, e.detail, e.tenant_id) for e in rows] == [
        ("master_key_retired", "version 1 removed", None),
        (
            "master_keys_rewrapped",
            "0 data keys, 0 recording keys and 0 webhook secrets under version 2",
            None,
        ),
        ("master_key_rotated", "version 2 added", None),
    ]
    assert all(e.actor.startswith("resguardo keys (") for e in rows)
    # system-wide entries: operators see them, a tenant does not
    r = await api.request("GET", "/v1/audit")
    assert r.body["entries"] == []
