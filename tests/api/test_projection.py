"""The read model: events published as the other services would, folded by the real API process;
restarts, a fresh database and kill -9 must neither lose nor double anything."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from . import factories as f
from .support import (
    ApiProcess,
    db_fetch,
    dev_tenant_id,
    eventually,
    make_api,
    publish_all,
    wait_offset,
)


async def state_of(api: ApiProcess, rid: str) -> str:
    r = await api.request("GET", f"/v1/recordings/{rid}")
    assert r.status == 200, r.text
    return str(r.body["state"])


async def wait_state(api: ApiProcess, rid: str, state: str) -> None:
    async def reached() -> bool:
        return await state_of(api, rid) == state

    await eventually(reached, message=f"state {state}")


async def test_state_follows_the_other_services_events(
    api: ApiProcess, js, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    start = f.started(dev, label="board meeting")
    rid = start.recording_id
    await publish_all(js, [start, f.joined(rid, dev, "alice", "s1")])
    await wait_state(api, rid, "capturing")

    await publish_all(js, [f.left(rid, dev, "alice", "s1"), f.closed(rid, dev)])
    await wait_state(api, rid, "transcoding")
    await publish_all(js, [f.sealed(rid, dev)])
    await wait_state(api, rid, "uploading")
    await publish_all(js, [f.attempt(rid, dev), f.file_uploaded(rid, dev), f.uploaded(rid, dev)])
    await wait_state(api, rid, "uploaded")

    r = await api.request("GET", f"/v1/recordings/{rid}")
    body = r.body
    assert body["label"] == "board meeting" and body["destination"] == "archive"
    assert [p["participant_id"] for p in body["participants"]] == ["alice"]
    files = {x["name"]: x for x in body["files"]}
    assert files["alice.webm"] == {
        "name": "alice.webm",
        "role": "media",
        "size": 1234,
        "sha256": "ab" * 32,
        "remote_uri": "s3://bucket/t/alice.webm",
    }
    assert files["SHA256SUMS"]["remote_uri"] == "s3://bucket/t/SHA256SUMS"
    types = [e["type"] for e in body["events"]]
    assert types == [
        "recording.started",
        "capture.participant_joined",
        "capture.participant_left",
        "capture.closed",
        "transcode.sealed",
        "upload.attempt_started",
        "upload.file_uploaded",
        "upload.uploaded",
    ]
    assert all({"seq", "stream", "occurred_at"} <= set(e) for e in body["events"])
    assert body["events_total"] == len(types)
    assert "whip_token_sha256" not in r.text


async def test_quarantine_and_retention_states(api: ApiProcess, js, database_url: str) -> None:
    dev = await dev_tenant_id(database_url)
    bad, kept = f.started(dev), f.started(dev)
    await publish_all(
        js,
        [
            bad,
            kept,
            f.closed(bad.recording_id, dev),
            f.quarantined(bad.recording_id, dev),
            f.closed(kept.recording_id, dev),
            f.sealed(kept.recording_id, dev),
            f.attempt(kept.recording_id, dev),
            f.retained(kept.recording_id, dev),
        ],
    )
    await wait_state(api, bad.recording_id, "failed")
    await wait_state(api, kept.recording_id, "retained")
    r = await api.request("GET", "/v1/recordings?state=failed")
    assert [x["recording_id"] for x in r.body["recordings"]] == [bad.recording_id]


async def test_undecodable_messages_are_skipped(api: ApiProcess, js, database_url: str) -> None:
    dev = await dev_tenant_id(database_url)
    start = f.started(dev)
    await publish_all(js, [start])
    await js.publish(f"captures.{start.recording_id}.closed", b"{not an event")
    seq = await publish_all(js, [f.closed(start.recording_id, dev)])
    await wait_offset(database_url, "CAPTURES", seq)
    await wait_state(api, start.recording_id, "transcoding")
    assert "skipping undecodable event" in api.log_text()


async def _fingerprint(database_url: str, rid: str) -> tuple[int, str]:
    rows = await db_fetch(
        database_url, "SELECT count(*) AS n FROM api.recording_events WHERE recording_id = $1", rid
    )
    view = await db_fetch(
        database_url, "SELECT view FROM api.recordings WHERE recording_id = $1", rid
    )
    return int(rows[0]["n"]), str(view[0]["view"]) if view else ""


async def test_restart_resumes_from_the_stored_offset(
    api: ApiProcess, js, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    start = f.started(dev)
    rid = start.recording_id
    seq = await publish_all(js, [start, f.joined(rid, dev, "bob", "s1")])
    await wait_offset(database_url, "CAPTURES", seq)
    before_count, _ = await _fingerprint(database_url, rid)
    assert before_count == 2

    api.stop()
    api.start()
    await api.ready()
    seq = await publish_all(js, [f.joined(rid, dev, "bob", "s2")])
    await wait_offset(database_url, "CAPTURES", seq)

    count, _ = await _fingerprint(database_url, rid)
    assert count == 3  # the two old events were not applied again
    r = await api.request("GET", f"/v1/recordings/{rid}")
    assert r.body["participants"][0]["sessions"] == 2  # a replayed join would make it 3


async def test_a_fresh_database_replays_to_the_same_read_model(
    api: ApiProcess, js, database_url: str, postgres_server, tmp_path: Path
) -> None:
    dev = await dev_tenant_id(database_url)
    start = f.started(dev)
    rid = start.recording_id
    events = [
        start,
        f.joined(rid, dev, "alice", "s1"),
        f.closed(rid, dev),
        f.sealed(rid, dev),
        f.attempt(rid, dev),
        f.file_uploaded(rid, dev),
        f.uploaded(rid, dev),
    ]
    await publish_all(js, events)
    await wait_state(api, rid, "uploaded")
    first = (await api.request("GET", f"/v1/recordings/{rid}")).body
    api.stop()

    # Same data dir (same token files) and NATS, new empty database.
    admin = await asyncpg.connect(postgres_server.url)
    await admin.execute('CREATE DATABASE "api_replay"')
    await admin.close()
    base, _, query = postgres_server.url.partition("?")
    other_url = base.rsplit("/", 1)[0] + "/api_replay" + (f"?{query}" if query else "")
    try:
        api.env["RESGUARDO_DATABASE_URL"] = other_url
        api.start()
        await api.ready()
        # the dev token in the file still works: its hash was inserted into the new DB
        await wait_state(api, rid, "uploaded")
        for stream, n in (("RECORDINGS", 1), ("CAPTURES", 2), ("TRANSCODES", 1), ("UPLOADS", 3)):
            await wait_offset(other_url, stream, n)
        second = (await api.request("GET", f"/v1/recordings/{rid}")).body
        # the dev tenant kept its id (data dir), so the dev token still sees its recordings
        assert second["tenant_id"] == first["tenant_id"] == dev
    finally:
        api.stop()
        admin = await asyncpg.connect(postgres_server.url)
        await admin.execute('DROP DATABASE IF EXISTS "api_replay" WITH (FORCE)')
        await admin.close()
    assert second == first


async def test_kill_9_during_projection_leaves_no_duplicates(
    tmp_path: Path, nats_server, js, database_url: str
) -> None:
    # First run: create the dev tenant, then stop the API and queue up a backlog.
    api = make_api(tmp_path, nats_server.url, database_url)
    api.start()
    await api.ready()
    dev = await dev_tenant_id(database_url)
    api.stop()

    start = f.started(dev)
    rid = start.recording_id
    total_joins = 1500
    await publish_all(js, [start])
    last = await publish_all(js, [f.joined(rid, dev, "carol", f"s{i}") for i in range(total_joins)])
    assert last == total_joins

    api.start()
    killed_at = 0

    async def partly_projected() -> bool:
        nonlocal killed_at
        rows = await db_fetch(
            database_url,
            "SELECT last_seq FROM api.projection_offsets WHERE stream = 'CAPTURES'",
        )
        if rows and rows[0]["last_seq"] > 0:
            api.kill()
            killed_at = int(rows[0]["last_seq"])
            return True
        return False

    await eventually(partly_projected, message="the projector to be part-way")
    # Did we really kill it mid-way? (If not, the test proves nothing: make the backlog larger.)
    assert 0 < killed_at < total_joins, killed_at

    api.start()
    await api.ready()
    await wait_offset(database_url, "CAPTURES", last)
    try:
        rows = await db_fetch(
            database_url,
            "SELECT stream, count(*) AS n, count(DISTINCT seq) AS d FROM api.recording_events "
            "WHERE recording_id = $1 GROUP BY stream ORDER BY stream",
            rid,
        )
        assert [(r["stream"], r["n"], r["d"]) for r in rows] == [
            ("CAPTURES", total_joins, total_joins),
            ("RECORDINGS", 1, 1),
        ]
        r = await api.request("GET", f"/v1/recordings/{rid}")
        # every join folded exactly once
        assert r.body["participants"][0]["sessions"] == total_joins
        assert r.body["events_total"] == total_joins + 1
    finally:
        api.stop()
