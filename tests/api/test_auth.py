"""Tokens and tenants: the files the API writes, 401s, and the admin-only tenant endpoint."""

from __future__ import annotations

import hashlib
import stat

from .support import ApiProcess, db_fetch


async def test_token_files_are_private_and_only_hashes_are_stored(
    api: ApiProcess, database_url: str
) -> None:
    secrets_dir = api.data_dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for name in ("admin-token", "dev-api-token"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600
    rows = await db_fetch(database_url, "SELECT token_sha256, role FROM api.tokens")
    stored = {r["token_sha256"]: r["role"] for r in rows}
    assert stored == {
        hashlib.sha256(api.admin_token.encode()).hexdigest(): "admin",
        hashlib.sha256(api.dev_token.encode()).hexdigest(): "tenant",
    }
    dump = str([dict(r) for r in await db_fetch(database_url, "SELECT * FROM api.tokens")])
    assert api.dev_token not in dump and api.admin_token not in dump
    assert api.dev_token not in api.log_text() and api.admin_token not in api.log_text()


async def test_every_endpoint_but_healthz_needs_a_valid_token(api: ApiProcess) -> None:
    r = await api.request("GET", "/healthz", token=None)
    assert r.status == 200 and r.body == {"status": "ok"}
    endpoints = [
        ("GET", "/v1/recordings"),
        ("POST", "/v1/recordings"),
        ("GET", "/v1/recordings/rec_000000000000000000000000"),
        ("POST", "/v1/recordings/rec_000000000000000000000000/stop"),
        ("POST", "/v1/recordings/rec_000000000000000000000000/resend"),
        ("GET", "/v1/destinations"),
        ("POST", "/v1/destinations"),
        ("GET", "/v1/destinations/x"),
        ("DELETE", "/v1/destinations/x"),
        ("POST", "/v1/tenants"),
        ("GET", "/v1/nothing-here"),
    ]
    for method, path in endpoints:
        for token in (None, "wrong-token", ""):
            r = await api.request(method, path, token=token)
            assert r.status == 401, (method, path, token, r.text)
            assert r.error["field"] == "authorization"
            assert r.error["message"].endswith(".")
    r = await api.request(
        "GET", "/v1/recordings", token=None, headers={"Authorization": f"Basic {api.dev_token}"}
    )
    assert r.status == 401


async def test_admin_creates_tenants_and_tokens_are_shown_once(
    api: ApiProcess, database_url: str
) -> None:
    r = await api.request("POST", "/v1/tenants", token="admin", json={"name": "acme"})
    assert r.status == 201, r.text
    tenant_id, token = r.body["tenant_id"], r.body["token"]
    assert tenant_id.startswith("ten_") and r.body["name"] == "acme"
    # the new token works and sees its own (empty) tenant
    r = await api.request("GET", "/v1/recordings", token=token)
    assert r.status == 200 and r.body == {"recordings": [], "next_cursor": None}
    # the token is not stored, only its hash
    rows = await db_fetch(database_url, "SELECT * FROM api.tokens WHERE tenant_id = $1", tenant_id)
    assert [r["token_sha256"] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in api.log_text()

    r = await api.request("POST", "/v1/tenants", token="admin", json={"name": "acme"})
    assert r.status == 409 and r.error["field"] == "name"
    r = await api.request("POST", "/v1/tenants", token="admin", json={"name": "../root"})
    assert r.status == 422 and r.error["field"] == "name"
    r = await api.request("POST", "/v1/tenants", token="dev", json={"name": "mine"})
    assert r.status == 403
    r = await api.request("GET", "/v1/recordings", token="admin")
    assert r.status == 403


async def test_restart_reuses_the_token_files(api: ApiProcess) -> None:
    admin, dev = api.admin_token, api.dev_token
    api.stop()
    api.start()
    await api.ready()
    assert (api.admin_token, api.dev_token) == (admin, dev)
    assert (await api.request("GET", "/v1/recordings")).status == 200
    assert (
        await api.request("POST", "/v1/tenants", token="admin", json={"name": "n1"})
    ).status == 201
