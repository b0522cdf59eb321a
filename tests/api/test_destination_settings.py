"""``PATCH /v1/destinations/{name}``: non-secret settings change in place, audited; secret
fields cannot be changed that way; the admin token may not."""

from __future__ import annotations

import secrets

from .support import ApiProcess, VaultProcess, db_fetch
from .test_destinations import s3_body


async def test_settings_change_in_place_audited(
    api: ApiProcess, vault: VaultProcess, database_url: str
) -> None:
    canary = "CANARY-" + secrets.token_hex(16)
    r = await api.request("POST", "/v1/destinations", json=s3_body("archive", canary))
    assert r.status == 201, r.text
    r = await api.request(
        "PATCH", "/v1/destinations/archive", json={"config": {"bucket": "moved", "region": None}}
    )
    assert r.status == 200, r.text
    assert r.body["config"] == {"bucket": "moved"}
    assert sorted(r.body["secret_fields"]) == ["access_key_id", "secret_access_key"]
    r = await api.request(
        "PATCH", "/v1/destinations/archive", json={"config": {"secret_access_key": "new"}}
    )
    assert r.status == 422 and r.body["error"]["field"] == "config.secret_access_key", r.text
    r = await api.request("PATCH", "/v1/destinations/archive", json={"config": {}})
    assert r.status == 422 and r.body["error"]["field"] == "config", r.text
    r = await api.request("PATCH", "/v1/destinations/archive", json={"colour": "x"})
    assert r.status == 400 or r.status == 422, r.text
    r = await api.request("PATCH", "/v1/destinations/missing", json={"config": {"bucket": "b"}})
    assert r.status == 404, r.text
    r = await api.request(
        "PATCH", "/v1/destinations/archive", token="admin", json={"config": {"bucket": "b"}}
    )
    assert r.status == 403, r.text
    rows = await db_fetch(
        database_url,
        "SELECT actor, target, detail FROM api.audit_log WHERE action = $1",
        "destination_settings_changed",
    )
    assert [(r["target"], r["detail"]) for r in rows] == [
        ("archive", "bucket=moved, region=(removed)")
    ]
    assert canary not in api.log_text()
