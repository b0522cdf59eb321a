"""Webhook deliveries through the API: folded from the WEBHOOKS stream (as the notifier publishes
them) into the tenant's list, and redeliveries asked for on RECORDINGS (the real vault says
which endpoints exist)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from shared import natsio
from shared.events import recordings
from shared.ids import new_recording_id

from . import factories as f
from .support import ApiProcess, VaultProcess, db_fetch, dev_tenant_id, publish_all, wait_offset
from .test_webhooks import add_webhook


def _at(event: Any, when: datetime) -> Any:
    return msgspec.structs.replace(event, occurred_at=when)


async def test_deliveries_are_folded_from_the_webhooks_stream(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    tenant = await dev_tenant_id(database_url)
    rid = new_recording_id()
    e1, e2 = "wh_00000000000000e1", "wh_00000000000000e2"
    base = datetime.now(UTC) - timedelta(hours=2)
    ok = _at(f.queued(rid, tenant, e1, webhook_id="msg_ok"), base)
    failing = _at(f.queued(rid, tenant, e1, webhook_id="msg_failing"), base + timedelta(minutes=1))
    dead = _at(f.queued(rid, tenant, e2, webhook_id="msg_dead"), base + timedelta(minutes=2))
    fresh = _at(f.queued(rid, tenant, e2, webhook_id="msg_fresh"), base + timedelta(minutes=3))
    theirs = f.queued(rid, "ten_00000000000000ff", e1, webhook_id="msg_theirs")
    seq = await publish_all(
        js,
        [
            ok,
            f.attempted(ok, 1, 500, "HTTP 500 from the receiver"),
            f.attempted(ok, 2, 204),
            f.delivered(ok, attempts=2),
            failing,
            f.attempted(failing, 1, 0, "connection refused"),
            dead,
            f.attempted(dead, 1, 503),
            f.gave_up(dead, attempts=1),
            fresh,
            theirs,
            # An attempt that names another tenant than its delivery changes nothing.
            msgspec.structs.replace(f.attempted(fresh, 1, 500), tenant_id="ten_00000000000000ff"),
        ],
    )
    await wait_offset(database_url, "WEBHOOKS", seq)

    r = await api.request("GET", "/v1/webhooks/deliveries")
    assert r.status == 200, r.text
    got = {d["webhook_id"]: d for d in r.body["deliveries"]}
    assert [d["webhook_id"] for d in r.body["deliveries"]] == [
        "msg_fresh",
        "msg_dead",
        "msg_failing",
        "msg_ok",
    ]  # newest first, and never another tenant's
    assert got["msg_ok"] | {"created_at": None, "updated_at": None} == {
        "delivery_id": ok.event_id,
        "endpoint_id": e1,
        "recording_id": rid,
        "webhook_id": "msg_ok",
        "webhook_type": "recording.uploaded",
        "state": "delivered",
        "failed": False,
        "attempts": 2,
        "last_status": 204,
        "last_error": "",
        "next_attempt_at": None,
        "redelivery_of": "",
        "created_at": None,
        "updated_at": None,
    }
    assert got["msg_failing"]["state"] == "failing" and got["msg_failing"]["last_status"] == 0
    assert got["msg_failing"]["last_error"] == "connection refused"
    assert got["msg_failing"]["next_attempt_at"] is not None
    assert got["msg_dead"]["state"] == "gave_up" and got["msg_dead"]["failed"] is True
    assert "retries spent" in got["msg_dead"]["last_error"]
    assert got["msg_fresh"]["state"] == "queued" and got["msg_fresh"]["attempts"] == 0

    async def ids(query: str) -> list[str]:
        r = await api.request("GET", f"/v1/webhooks/deliveries?{query}")
        assert r.status == 200, r.text
        return [d["webhook_id"] for d in r.body["deliveries"]]

    assert await ids("failed=true") == ["msg_dead", "msg_failing"]
    assert await ids(f"endpoint_id={e1}") == ["msg_failing", "msg_ok"]
    assert await ids(f"endpoint_id={e2}&failed=true") == ["msg_dead"]
    since = (base + timedelta(seconds=90)).isoformat()
    assert await ids(f"since={since.replace('+00:00', 'Z')}") == ["msg_fresh", "msg_dead"]
    assert await ids("limit=1") == ["msg_fresh"]

    # A delivery is no step of its recording's life: no recording row, no history entry.
    rows = await db_fetch(
        database_url, "SELECT recording_id FROM api.recording_events WHERE stream = 'WEBHOOKS'"
    )
    assert rows == []
    rows = await db_fetch(
        database_url, "SELECT recording_id FROM api.recordings WHERE recording_id = $1", rid
    )
    assert rows == []


async def test_redeliver_one_or_every_given_up_since(
    api: ApiProcess, vault: VaultProcess, js: Any, database_url: str
) -> None:
    tenant = await dev_tenant_id(database_url)
    endpoint_id = (await add_webhook(api))["endpoint"]["endpoint_id"]
    other_id = (await add_webhook(api))["endpoint"]["endpoint_id"]
    rid = new_recording_id()
    base = datetime.now(UTC) - timedelta(hours=1)
    old = _at(f.queued(rid, tenant, endpoint_id, webhook_id="msg_old"), base - timedelta(days=2))
    a = _at(f.queued(rid, tenant, endpoint_id, webhook_id="msg_a"), base)
    a_again = _at(
        f.queued(rid, tenant, endpoint_id, webhook_id="msg_a", redelivery_of=a.event_id, n=1),
        base + timedelta(minutes=5),
    )
    b = _at(f.queued(rid, tenant, endpoint_id, webhook_id="msg_b"), base + timedelta(minutes=1))
    c = _at(f.queued(rid, tenant, endpoint_id, webhook_id="msg_c"), base + timedelta(minutes=2))
    d = _at(f.queued(rid, tenant, other_id, webhook_id="msg_d"), base + timedelta(minutes=3))
    e = _at(f.queued(rid, tenant, endpoint_id, webhook_id="msg_e"), base + timedelta(minutes=4))
    seq = await publish_all(
        js,
        [
            old, f.gave_up(old),  # before --since
            a, f.gave_up(a), a_again, f.gave_up(a_again),  # only the newest try is sent again
            b, f.delivered(b),  # delivered: nothing to do
            c, f.attempted(c, 1, 500),  # still being retried
            d, f.gave_up(d),
            e, f.gave_up(e),
        ],
    )  # fmt: skip
    await wait_offset(database_url, "WEBHOOKS", seq)

    # One delivery, in any state.
    r = await api.request("POST", "/v1/webhooks/redeliver", json={"delivery_id": b.event_id})
    assert r.status == 202, r.text
    assert r.body["requested"] == [b.event_id] and r.body["more"] is False
    first_request = r.body["request_id"]
    asked = await natsio.read_subject(js, recordings.STREAM, f"recordings.{rid}.>")
    assert len(asked) == 1
    ((_, event),) = asked
    assert isinstance(event, recordings.WebhookRedeliveryRequested)
    assert (event.delivery_id, event.endpoint_id, event.tenant_id) == (
        b.event_id,
        endpoint_id,
        tenant,
    )
    assert event.request_id == first_request

    since = base.isoformat()
    r = await api.request("POST", "/v1/webhooks/redeliver", json={"since": since})
    assert r.status == 202, r.text
    assert r.body["requested"] == [d.event_id, e.event_id, a_again.event_id]  # oldest first
    r = await api.request(
        "POST", "/v1/webhooks/redeliver", json={"since": since, "endpoint_id": other_id}
    )
    assert r.status == 202 and r.body["requested"] == [d.event_id], r.text
    asked = await natsio.read_subject(js, recordings.STREAM, f"recordings.{rid}.>")
    assert len(asked) == 5
    assert len({x.event_id for _, x in asked}) == 5  # per request and delivery: never deduplicated

    # The redelivery request is in the recording's history too.
    rows = await db_fetch(
        database_url,
        "SELECT count(*) AS n FROM api.recording_events "
        "WHERE recording_id = $1 AND type = 'recording.webhook_redelivery_requested'",
        rid,
    )
    assert rows[0]["n"] == 5

    # A removed endpoint: nothing to send to; --since skips it.
    r = await api.request("DELETE", f"/v1/webhooks/{other_id}")
    assert r.status == 200, r.text
    r = await api.request("POST", "/v1/webhooks/redeliver", json={"delivery_id": d.event_id})
    assert r.status == 409 and r.error["field"] == "endpoint_id", r.text
    r = await api.request("POST", "/v1/webhooks/redeliver", json={"since": since})
    assert r.status == 202 and r.body["requested"] == [e.event_id, a_again.event_id], r.text
    r = await api.request(
        "POST", "/v1/webhooks/redeliver", json={"since": since, "endpoint_id": other_id}
    )
    assert r.status == 404 and r.error["field"] == "endpoint_id", r.text

    # Another tenant can redeliver none of these.
    _, token = await api.create_tenant("acme")
    r = await api.request(
        "POST", "/v1/webhooks/redeliver", token=token, json={"delivery_id": e.event_id}
    )
    assert r.status == 404 and r.error["field"] == "delivery_id", r.text
    r = await api.request("GET", "/v1/webhooks/deliveries", token=token)
    assert r.status == 200 and r.body == {"deliveries": []}
