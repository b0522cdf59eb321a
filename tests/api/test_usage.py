"""``GET /v1/usage``: backup bytes held per tenant and per day, against the tenant's capacity
(``RESGUARDO_BACKUP_CAPACITY_BYTES``, or its own from ``PATCH /v1/tenants/{id}``), with the
warning levels; and a tenant over 100% still starts recordings: nothing refuses work over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.api import usage
from shared.embedded import NatsServer

from . import backup_events as b
from . import factories as f
from .support import (
    ApiProcess,
    VaultProcess,
    add_destination,
    db_fetch,
    dev_tenant_id,
    make_api,
)
from .test_pagination import publish_folded

TODAY = datetime.now(UTC).date()


def day(n: int) -> datetime:
    """Noon (UTC) ``n`` days ago."""
    return datetime.combine(TODAY - timedelta(days=n), time(12), UTC)


@pytest.fixture
async def small_api(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> AsyncIterator[ApiProcess]:
    """An API whose default backup capacity is 10 kB."""
    proc = make_api(
        tmp_path, nats_server.url, database_url, name="small-api", backup_capacity_bytes="10000"
    )
    proc.start()
    try:
        await proc.ready()
        yield proc
    finally:
        proc.stop()


async def mine(api: ApiProcess, query: str = "", token: str = "dev") -> dict[str, Any]:
    r = await api.request("GET", f"/v1/usage{query}", token=token)
    assert r.status == 200, r.text
    (tenant,) = r.body["tenants"]
    assert isinstance(tenant, dict)
    return tenant


async def test_a_daily_series_of_what_the_backups_hold(
    small_api: ApiProcess, js: Any, database_url: str
) -> None:
    api = small_api
    dev = await dev_tenant_id(database_url)
    other, other_token = await api.create_tenant("other")
    one, two = f.started(dev), f.started(dev)
    r1, r2 = one.recording_id, two.recording_id
    await publish_folded(
        js,
        database_url,
        [
            b.at(one, day(40)),
            # long before the window: still held (never purged)
            b.segment(r1, dev, 0, 1000, when=day(40)),
            b.at(two, day(3)),
            b.segment(r2, dev, 0, 2000, when=day(3)),
            b.segment(r2, dev, 0, 2000, when=day(3), republished=1),  # counted once
            b.segment(r2, dev, 1, 500, when=day(2)),
            b.sealed(r2, dev, media=3000, sums=100, when=day(1)),
            b.purged(r2, dev, 5700, when=datetime.now(UTC)),  # today: held nothing now
            b.segment(f.started(other).recording_id, other, 0, 99_000, when=day(1)),
        ],
    )
    t = await mine(api, "?days=5")
    assert t["tenant_id"] == dev and t["name"] == "dev"
    assert [d["date"] for d in t["series"]] == [
        (TODAY - timedelta(days=n)).isoformat() for n in (4, 3, 2, 1, 0)
    ]
    assert [d["held_bytes"] for d in t["series"]] == [1000, 3000, 3500, 6600, 1000]
    assert t["held_bytes"] == 1000 and t["capacity_bytes"] == 10000
    assert t["capacity_source"] == "default" and t["percent"] == 10.0 and t["level"] == "ok"
    assert t["series"][3]["percent"] == 66.0

    full = await mine(api, "?days=2", token=other_token)
    assert full["held_bytes"] == 99_000 and full["percent"] == 990.0 and full["level"] == "full"
    assert len((await mine(api))["series"]) == 30  # the default


async def test_capacity_per_tenant_and_the_levels(
    small_api: ApiProcess, js: Any, database_url: str
) -> None:
    api = small_api
    dev = await dev_tenant_id(database_url)
    rec = f.started(dev)
    await publish_folded(js, database_url, [rec, b.segment(rec.recording_id, dev, 0, 8500)])
    assert (await mine(api))["level"] == "warning"  # 85% of the default 10 kB

    r = await api.request(
        "PATCH", f"/v1/tenants/{dev}", token="admin", json={"backup_capacity_bytes": 8500}
    )
    assert r.status == 200, r.text
    assert r.body == {
        "tenant_id": dev,
        "name": "dev",
        "backup_capacity_bytes": 8500,
        "effective_capacity_bytes": 8500,
    }
    t = await mine(api)
    assert (t["capacity_bytes"], t["capacity_source"]) == (8500, "tenant")
    assert (t["percent"], t["level"]) == (100.0, "full")
    await api.request(
        "PATCH", f"/v1/tenants/{dev}", token="admin", json={"backup_capacity_bytes": 10**12}
    )
    assert (await mine(api))["level"] == "ok"
    r = await api.request(
        "PATCH", f"/v1/tenants/{dev}", token="admin", json={"backup_capacity_bytes": None}
    )
    assert r.body["backup_capacity_bytes"] is None and r.body["effective_capacity_bytes"] == 10000
    assert (await mine(api))["capacity_source"] == "default"
    rows = await db_fetch(
        database_url,
        "SELECT actor, action, detail FROM api.audit_log WHERE action = 'backup_capacity_changed'",
    )
    assert [r["detail"] for r in rows] == [
        "backup capacity set to 8500 bytes",
        f"backup capacity set to {10**12} bytes",
        "backup capacity set to the default",
    ]
    assert {r["actor"] for r in rows} == {"admin token"}


@pytest.mark.parametrize(
    ("path_id", "body", "token", "status", "field"),
    [
        ("dev", {"backup_capacity_bytes": 5}, "dev", 403, ""),
        ("ten_nope", {"backup_capacity_bytes": 5}, "admin", 400, "tenant_id"),
        ("ten_00000000000000ff", {"backup_capacity_bytes": 5}, "admin", 404, "tenant_id"),
        ("dev", {"backup_capacity_bytes": 0}, "admin", 422, "backup_capacity_bytes"),
        ("dev", {"backup_capacity_bytes": -1}, "admin", 422, "backup_capacity_bytes"),
        ("dev", {"backup_capacity_bytes": "100GB"}, "admin", 422, "backup_capacity_bytes"),
        ("dev", {"backup_capacity_bytes": True}, "admin", 422, "backup_capacity_bytes"),
        ("dev", {}, "admin", 422, "backup_capacity_bytes"),
        ("dev", {"backup_capacity_bytes": 5, "quota": 1}, "admin", 422, "quota"),
    ],
)
async def test_capacity_changes_are_checked(
    api: ApiProcess,
    database_url: str,
    path_id: str,
    body: dict[str, Any],
    token: str,
    status: int,
    field: str,
) -> None:
    tenant_id = await dev_tenant_id(database_url) if path_id == "dev" else path_id
    r = await api.request("PATCH", f"/v1/tenants/{tenant_id}", token=token, json=body)
    assert (r.status, r.error["field"]) == (status, field), r.text


async def test_usage_parameters_are_checked(api: ApiProcess, database_url: str) -> None:
    for q, field in [("days=0", "days"), ("days=367", "days"), ("days=x", "days")]:
        r = await api.request("GET", f"/v1/usage?{q}")
        assert (r.status, r.error["field"]) == (400, field), r.text
    other = "ten_00000000000000ff"
    r = await api.request("GET", f"/v1/usage?tenant_id={other}")
    assert (r.status, r.error["field"]) == (403, "tenant_id"), r.text
    r = await api.request("GET", "/v1/usage", token="admin")
    assert r.status == 403, r.text
    assert (await mine(api))["capacity_bytes"] == 100 * 10**9  # the default setting


async def test_a_tenant_over_its_capacity_still_records(
    api: ApiProcess, vault: VaultProcess, js: Any, tmp_path: Path, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    await add_destination(api, tmp_path)
    await api.request(
        "PATCH", f"/v1/tenants/{dev}", token="admin", json={"backup_capacity_bytes": 100}
    )
    old = f.started(dev)
    await publish_folded(js, database_url, [old, b.segment(old.recording_id, dev, 0, 5000)])
    assert (await mine(api))["percent"] == 5000.0

    r = await api.request("POST", "/v1/recordings", json={"destination": "archive"})
    assert r.status == 201, r.text  # never refused over a quota
    rid = r.body["recording_id"]
    await publish_folded(js, database_url, [b.segment(rid, dev, 0, 700)])
    t = await mine(api)
    assert (t["held_bytes"], t["level"]) == (5700, "full")
    r = await api.request("POST", f"/v1/recordings/{rid}/stop")
    assert r.status == 202, r.text
    shown = await api.request("GET", f"/v1/recordings/{rid}")
    assert shown.body["state"] == "capturing" and shown.body["size_bytes"] == 700


async def test_the_report_of_every_tenant_at_once(api: ApiProcess, database_url: str) -> None:
    """What an operator reads (``tenant_id=None``): every tenant, by name."""
    await api.create_tenant("zulu")
    await api.create_tenant("alpha")
    pool = await asyncpg.create_pool(database_url)
    assert pool is not None
    try:
        report = await usage.report(pool, None, days=3, today=TODAY, default_capacity=50)
    finally:
        await pool.close()
    assert [t.tenant.name for t in report] == ["alpha", "dev", "zulu"]
    assert all(t.held_bytes == 0 and len(t.series) == 3 for t in report)
    assert usage.level_of(79.99) == "ok" and usage.level_of(80) == "warning"
    assert usage.level_of(100) == "full"
