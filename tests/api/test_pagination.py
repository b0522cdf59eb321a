"""``GET /v1/recordings`` a page at a time (a cursor stable under inserts) and filtered, each row
with what the dashboard's table shows; ``GET /v1/retained``; every bad parameter is a 4xx naming
it. Against the real API process, NATS and PostgreSQL (events folded by the projector)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.api import query
from services.api.errors import ApiError
from services.api.roles import Action, Principal
from services.api.web import PRINCIPAL
from shared.events.base import Event
from shared.natsio import publish

from . import backup_events as b
from . import factories as f
from .support import ApiProcess, dev_tenant_id, wait_offset

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def publish_folded(js: Any, database_url: str, events: list[Event]) -> None:
    """Publish in order and wait until the projector has folded every one."""
    last: dict[str, int] = {}
    for event in events:
        ack = await publish(js, event)
        last[ack.stream] = ack.seq
    for stream, seq in last.items():
        await wait_offset(database_url, stream, seq)


def started(tenant_id: str, when: datetime, label: str = "") -> Event:
    return b.at(f.started(tenant_id, label=label), when)


async def all_pages(api: ApiProcess, path: str, token: str = "dev") -> list[list[str]]:
    pages: list[list[str]] = []
    url = path
    while True:
        r = await api.request("GET", url, token=token)
        assert r.status == 200, r.text
        pages.append([x["recording_id"] for x in r.body["recordings"]])
        if r.body["next_cursor"] is None:
            return pages
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}cursor={r.body['next_cursor']}"


async def test_pages_follow_the_cursor_newest_first_and_stay_stable_under_inserts(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    other, _ = await api.create_tenant("other")
    # Two share a created_at: the recording id breaks the tie, so none is skipped or repeated.
    times = [T0 + timedelta(hours=i) for i in range(6)] + [T0 + timedelta(hours=5)]
    mine = [started(dev, t, f"n{i}") for i, t in enumerate(times)]
    await publish_folded(js, database_url, [*mine, started(other, T0 + timedelta(hours=9))])
    expected = [
        e.recording_id
        for e in sorted(mine, key=lambda e: (e.occurred_at, e.recording_id), reverse=True)
    ]

    pages = await all_pages(api, "/v1/recordings?limit=3")
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [rid for p in pages for rid in p] == expected

    first = await api.request("GET", "/v1/recordings?limit=3")
    cursor = first.body["next_cursor"]
    assert isinstance(cursor, str) and "=" not in cursor  # opaque, URL-safe
    # A recording started meanwhile (newer than all) does not shift the next pages.
    fresh = started(dev, T0 + timedelta(days=1), "fresh")
    await publish_folded(js, database_url, [fresh])
    second = await api.request("GET", f"/v1/recordings?limit=3&cursor={cursor}")
    assert [x["recording_id"] for x in second.body["recordings"]] == expected[3:6]
    again = await api.request("GET", "/v1/recordings?limit=3")
    assert again.body["recordings"][0]["recording_id"] == fresh.recording_id

    # Default page size 50, the exact last page has no cursor.
    r = await api.request("GET", "/v1/recordings")
    assert len(r.body["recordings"]) == 8 and r.body["next_cursor"] is None
    r = await api.request("GET", "/v1/recordings?limit=8")
    assert r.body["next_cursor"] is None
    r = await api.request("GET", "/v1/recordings?limit=200")
    assert r.status == 200


async def test_filters_by_state_destination_and_dates(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    a = started(dev, T0, "a")  # capturing
    bb = started(dev, T0 + timedelta(days=1), "b")  # retained
    c = msgspec.structs.replace(  # uploaded, to another destination
        f.started(dev, label="c"),
        occurred_at=T0 + timedelta(days=2),
        destination_id="dst_00000000000000cc",
        destination_name="second",
    )
    rb, rc = bb.recording_id, c.recording_id
    await publish_folded(
        js,
        database_url,
        [
            a,
            bb,
            c,
            f.closed(rb, dev),
            f.sealed(rb, dev),
            f.attempt(rb, dev),
            f.retained(rb, dev),
            f.closed(rc, dev),
            f.sealed(rc, dev),
            f.attempt(rc, dev),
            f.uploaded(rc, dev),
        ],
    )

    async def ids(q: str) -> list[str]:
        r = await api.request("GET", f"/v1/recordings?{q}")
        assert r.status == 200, (q, r.text)
        return [x["recording_id"] for x in r.body["recordings"]]

    assert await ids("state=retained") == [rb]
    assert await ids("state=retained,uploaded") == [rc, rb]
    assert await ids("state=capturing&state=uploaded") == [rc, a.recording_id]
    assert await ids("state=failed") == []
    assert await ids("destination=second") == [rc]
    assert await ids("destination=dst_00000000000000cc") == [rc]
    assert await ids("destination=archive") == [rb, a.recording_id]
    assert await ids("since=2026-03-02") == [rc, rb]
    assert await ids("until=2026-03-02") == [rb, a.recording_id]  # a date: that whole day
    assert await ids("since=2026-03-02&until=2026-03-02") == [rb]
    assert await ids("until=2026-03-02T12:00:00Z") == [rb, a.recording_id]  # inclusive
    assert await ids("until=2026-03-02T11:59:59") == [a.recording_id]  # no offset: UTC
    assert await ids("since=2026-03-03T13:00:00%2B01:00") == [rc]
    assert await ids("state=uploaded&destination=archive") == []
    # the filters keep paging: two pages of one each
    pages = await all_pages(api, "/v1/recordings?state=retained,uploaded&limit=1")
    assert pages == [[rc], [rb]]


@pytest.mark.parametrize(
    ("query_string", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor!", "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00"]').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'["yesterday", "rec_x"]').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "r"]').decode(), "cursor"),
        ("cursor=" + "A" * 600, "cursor"),
        ("state=lost", "state"),
        ("state=uploaded,,nope", "state"),
        ("destination=../etc", "destination"),
        ("since=last-tuesday", "since"),
        ("until=2026-13-01", "until"),
        ("since=2026-03-02&until=2026-03-01", "until"),
        ("tenant_id=nope", "tenant_id"),
    ],
)
async def test_bad_parameters_are_4xx_naming_them(
    api: ApiProcess, query_string: str, field: str
) -> None:
    for path in ("/v1/recordings", "/v1/retained"):
        if field == "state" and path == "/v1/retained":
            continue
        r = await api.request("GET", f"{path}?{query_string}")
        assert 400 <= r.status < 500 and r.error["field"] == field, (path, query_string, r.text)


async def test_a_tenant_sees_only_its_own_even_naming_another(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    other, other_token = await api.create_tenant("other")
    dev = await dev_tenant_id(database_url)
    theirs = started(other, T0)
    await publish_folded(js, database_url, [started(dev, T0), theirs])
    r = await api.request("GET", f"/v1/recordings?tenant_id={other}")
    assert r.status == 403 and r.error["field"] == "tenant_id", r.text
    r = await api.request("GET", f"/v1/recordings?tenant_id={other}", token=other_token)
    assert [x["recording_id"] for x in r.body["recordings"]] == [theirs.recording_id]
    r = await api.request("GET", "/v1/recordings", token="admin")
    assert r.status == 403, r.text


async def test_rows_carry_duration_size_and_backup_bytes(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    cap, done, gone = (started(dev, T0 + timedelta(minutes=i)) for i in range(3))
    rc, rd, rg = cap.recording_id, done.recording_id, gone.recording_id
    await publish_folded(
        js,
        database_url,
        [
            cap,
            done,
            gone,
            # capturing: two tracks; a re-published segment counts once
            b.segment(rc, dev, 0, 100, first_s=1.0, last_s=3.0),
            b.segment(rc, dev, 1, 150, first_s=3.0, last_s=5.0),
            b.segment(rc, dev, 1, 150, first_s=3.0, last_s=5.0, republished=1),
            b.segment(rc, dev, 0, 70, track="alice-s1-video", first_s=0.5, last_s=4.0),
            # sealed and retained: the sealed duration wins; the backup holds both
            b.segment(rd, dev, 0, 500),
            f.closed(rd, dev),
            b.sealed(rd, dev, media=1000, sums=80, duration_s=61.5),
            f.attempt(rd, dev),
            b.retained(rd, dev, "bucket not found; the backup is kept"),
            # uploaded and purged: its files' size stays, its backup holds nothing
            b.segment(rg, dev, 0, 300),
            f.closed(rg, dev),
            b.sealed(rg, dev, media=2000, sums=80),
            f.attempt(rg, dev),
            f.uploaded(rg, dev),
            b.purged(rg, dev, 2400),
        ],
    )
    r = await api.request("GET", "/v1/recordings")
    rows = {x["recording_id"]: x for x in r.body["recordings"]}
    assert rows[rc]["duration_s"] == 4.5 and rows[rc]["size_bytes"] == 320
    assert rows[rc]["backup_bytes"] == 320 and rows[rc]["retained"] is None
    assert rows[rd]["duration_s"] == 61.5 and rows[rd]["size_bytes"] == 1080
    assert rows[rd]["backup_bytes"] == 1580
    assert rows[rd]["retained"]["reason"] == "bucket not found; the backup is kept"
    assert rows[rg]["backup_bytes"] == 0 and rows[rg]["state"] == "uploaded"
    # the existing fields are all still there
    for key in ("tenant_id", "destination", "destination_id", "label", "stop_requested"):
        assert key in rows[rc]
    assert rows[rg]["files"] and rows[rg]["participants"] == []
    r = await api.request("GET", f"/v1/recordings/{rd}")
    assert r.body["backup_bytes"] == 1580 and r.body["events"]


async def test_retained_lists_why_since_when_and_size(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    held, fine = started(dev, T0), started(dev, T0 + timedelta(hours=1))
    rh = held.recording_id
    when = T0 + timedelta(hours=3)
    await publish_folded(
        js,
        database_url,
        [
            held,
            fine,
            b.segment(rh, dev, 0, 400),
            f.closed(rh, dev),
            b.sealed(rh, dev, media=900, sums=100),
            f.attempt(rh, dev),
            b.retained(rh, dev, "first failure", when=when - timedelta(hours=1)),
            f.attempt(rh, dev, job="job2", trigger="resend1"),
            b.retained(rh, dev, "access denied; the backup is kept", job="job2", when=when),
        ],
    )
    r = await api.request("GET", "/v1/retained")
    assert r.status == 200, r.text
    assert r.body["next_cursor"] is None
    (row,) = r.body["retained"]
    assert row["recording_id"] == rh and row["state"] == "retained"
    assert row["retained"]["reason"] == "access denied; the backup is kept"
    assert datetime.fromisoformat(row["retained"]["since"]) == when
    assert row["backup_bytes"] == 1400 and row["size_bytes"] == 1000
    r = await api.request("GET", "/v1/retained?state=uploaded")
    assert r.status == 400 and r.error["field"] == "state"
    r = await api.request("GET", "/v1/retained?until=2026-02-01")
    assert r.body["retained"] == []


def _request(principal: Principal, qs: str = "") -> web.Request:
    request = make_mocked_request("GET", f"/v1/recordings{qs}")
    request[PRINCIPAL] = principal
    return request


@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
def test_scope_operators_see_every_tenant_or_the_one_they_name() -> None:
    operator = Principal(role="operator", tenant_id=None, email="ops@example.com", via="session")
    assert query.scope(_request(operator), Action.VIEW_RECORDINGS) is None
    named = "ten_00000000000000ab"
    assert query.scope(_request(operator, f"?tenant_id={named}"), Action.VIEW_USAGE) == named
    with pytest.raises(ApiError) as bad:
        query.scope(_request(operator, "?tenant_id=x"), Action.VIEW_AUDIT)
    assert bad.value.field == "tenant_id"
    with pytest.raises(ApiError) as refused:
        query.scope(_request(operator), Action.MANAGE_USERS)
    assert refused.value.status == 403
    member = Principal(role="member", tenant_id=named, via="session")
    assert query.scope(_request(member), Action.VIEW_RECORDINGS) == named
    with pytest.raises(ApiError) as other:
        query.scope(_request(member, "?tenant_id=ten_00000000000000cd"), Action.VIEW_AUDIT)
    assert (other.value.status, other.value.field) == (403, "tenant_id")
    with pytest.raises(ApiError):
        query.scope(_request(Principal(role="admin", tenant_id=None)), Action.VIEW_RECORDINGS)


async def test_an_operator_sees_every_tenant_without_names_or_hashes(
    api: ApiProcess, js: Any, database_url: str
) -> None:
    """Through a real operator session: every tenant's recordings (or one with tenant_id), and
    the rows keep states and sizes but lose participants' names and files' hashes."""
    from .auth_support import signed_in

    dev = await dev_tenant_id(database_url)
    other, _ = await api.create_tenant("other")
    mine, theirs = started(dev, T0), started(other, T0 + timedelta(hours=1))
    rid = mine.recording_id
    await publish_folded(
        js,
        database_url,
        [
            mine,
            theirs,
            f.joined(rid, dev, "alice", "s1"),
            f.closed(rid, dev),
            f.sealed(rid, dev),
            f.attempt(rid, dev),
            f.uploaded(rid, dev),
        ],
    )
    ops = await signed_in(
        api, "ops@example.com", "operator", "a long operator password", token="admin"
    )
    r = await ops.request("GET", "/v1/recordings")
    assert r.status == 200, r.text
    rows = r.body["recordings"]
    assert [x["recording_id"] for x in rows] == [theirs.recording_id, rid]
    row = rows[1]
    assert row["participants"][0]["display_name"] == "" and row["size_bytes"] == f.MEDIA.size + 80
    assert {x["sha256"] for x in row["files"]} == {""}
    assert {x["remote_uri"] for x in row["files"]} == {None}
    r = await ops.request("GET", f"/v1/recordings?tenant_id={other}")
    assert [x["recording_id"] for x in r.body["recordings"]] == [theirs.recording_id]
    r = await ops.request("GET", "/v1/usage")
    assert {t["name"] for t in r.body["tenants"]} == {"dev", "other"}
    r = await ops.request("GET", f"/v1/audit?tenant_id={dev}")
    assert r.status == 200, r.text
    # the tenant's own token still sees names and hashes
    r = await api.request("GET", "/v1/recordings")
    own = r.body["recordings"][0]
    assert own["participants"][0]["display_name"] == "Alice" and own["files"][0]["sha256"]
