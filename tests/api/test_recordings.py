"""Recordings over HTTPS against the real API process, NATS, PostgreSQL and vault."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shared.events import recordings
from shared.natsio import last_event, read_subject

from . import factories as f
from .support import (
    ApiProcess,
    VaultProcess,
    add_destination,
    dev_tenant_id,
    eventually,
    publish_all,
    wait_offset,
)


async def test_start_publishes_started_with_the_token_hash_only(
    api: ApiProcess, vault: VaultProcess, js, tmp_path: Path, database_url: str
) -> None:
    dest = await add_destination(api, tmp_path)
    r = await api.request(
        "POST", "/v1/recordings", json={"destination": "archive", "label": "weekly sync"}
    )
    assert r.status == 201, r.text
    rid, token = r.body["recording_id"], r.body["token"]
    assert r.body["whip_url"] == f"https://127.0.0.1:9444/whip/{rid}"
    assert r.body["state"] == "capturing" and len(token) >= 40

    event = await last_event(js, recordings.STREAM, f"recordings.{rid}.started")
    assert isinstance(event, recordings.RecordingStarted)
    assert event.whip_token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert event.destination_id == dest["destination_id"]
    assert event.destination_name == "archive" and event.label == "weekly sync"
    assert event.tenant_id == await dev_tenant_id(database_url)
    # the token itself is nowhere but in the response
    assert token not in api.log_text()

    shown = await api.request("GET", f"/v1/recordings/{rid}")
    assert shown.status == 200, shown.text
    assert shown.body["state"] == "capturing" and shown.body["label"] == "weekly sync"
    assert shown.body["destination"] == "archive"
    assert [e["type"] for e in shown.body["events"]] == ["recording.started"]
    assert token not in shown.text


async def test_start_needs_an_existing_destination(api: ApiProcess, vault: VaultProcess) -> None:
    r = await api.request("POST", "/v1/recordings", json={"destination": "nowhere"})
    assert r.status == 404 and r.error["field"] == "destination", r.text
    r = await api.request("POST", "/v1/recordings", json={"destination": "../etc"})
    assert r.status == 422 and r.error["field"] == "destination", r.text
    r = await api.request("POST", "/v1/recordings", json={})
    assert r.status == 422 and r.error["field"] == "destination", r.text
    r = await api.request("POST", "/v1/recordings", json={"destination": "x", "colour": "red"})
    assert r.status == 422 and r.error["field"] == "colour", r.text
    r = await api.request("POST", "/v1/recordings", data=b"{not json")
    assert r.status == 400, r.text


async def test_start_says_when_the_vault_is_down(api: ApiProcess) -> None:
    r = await api.request("POST", "/v1/recordings", json={"destination": "archive"})
    assert r.status == 503 and "vault" in r.error["message"], r.text


async def test_stop_publishes_once_and_repeats_are_no_ops(
    api: ApiProcess, vault: VaultProcess, js, tmp_path: Path
) -> None:
    await add_destination(api, tmp_path)
    rid = (await api.request("POST", "/v1/recordings", json={"destination": "archive"})).body[
        "recording_id"
    ]
    for _ in range(3):
        r = await api.request("POST", f"/v1/recordings/{rid}/stop")
        assert r.status == 202, r.text
    history = await read_subject(js, recordings.STREAM, f"recordings.{rid}.>")
    kinds = [type(e).__name__ for _, e in history]
    assert kinds == ["RecordingStarted", "RecordingStopRequested"]
    shown = await api.request("GET", f"/v1/recordings/{rid}")
    assert shown.body["stop_requested"] is True
    assert [e["type"] for e in shown.body["events"]] == [
        "recording.started",
        "recording.stop_requested",
    ]


async def test_list_is_newest_first_and_tenant_scoped(
    api: ApiProcess, js, database_url: str
) -> None:
    dev = await dev_tenant_id(database_url)
    other, _ = await api.create_tenant("other")
    events = [f.started(dev, label=f"n{i}") for i in range(3)] + [f.started(other)]
    seq = await publish_all(js, events)
    await wait_offset(database_url, "RECORDINGS", seq)
    r = await api.request("GET", "/v1/recordings")
    assert r.status == 200, r.text
    ids = [x["recording_id"] for x in r.body["recordings"]]
    assert ids == [e.recording_id for e in reversed(events[:3])]
    r = await api.request("GET", "/v1/recordings?limit=2")
    assert len(r.body["recordings"]) == 2
    r = await api.request("GET", "/v1/recordings?limit=zero")
    assert r.status == 400 and r.error["field"] == "limit"


async def test_unknown_and_malformed_ids(api: ApiProcess) -> None:
    unknown = "rec_" + "0" * 24
    for method, path in [
        ("GET", f"/v1/recordings/{unknown}"),
        ("POST", f"/v1/recordings/{unknown}/stop"),
        ("POST", f"/v1/recordings/{unknown}/resend"),
    ]:
        r = await api.request(method, path)
        assert r.status == 404 and r.error["field"] == "recording_id", (path, r.text)
    # The client normalises "../x" and "%2e%2e" away (the route then does not exist); encoded
    # slashes and NULs reach the handler, which refuses anything but a recording id.
    reaching = ["..%2f..%2fetc", "rec_%00", "%00", "rec_" + "0" * 23 + "%2f", "rec_%2e%2e"]
    for bad in ["../x", "%2e%2e", *reaching]:
        for method, suffix in [("GET", ""), ("POST", "/stop"), ("POST", "/resend")]:
            r = await api.request(method, f"/v1/recordings/{bad}{suffix}")
            assert 400 <= r.status < 500, (bad, suffix, r.status)
            if bad in reaching:
                assert (r.status, r.error["field"]) == (400, "recording_id"), (bad, r.text)


async def test_tenant_b_can_neither_see_nor_stop_nor_resend_tenant_a_recordings(
    api: ApiProcess, js, database_url: str
) -> None:
    a_id, a_token = await api.create_tenant("alpha")
    _, b_token = await api.create_tenant("bravo")
    mine = f.started(a_id)
    await publish_all(js, [mine])
    rid = mine.recording_id
    # tenant B: 404 everywhere, even before the projector has caught up (stream fallback)
    for method, path in [
        ("GET", f"/v1/recordings/{rid}"),
        ("POST", f"/v1/recordings/{rid}/stop"),
        ("POST", f"/v1/recordings/{rid}/resend"),
    ]:
        r = await api.request(method, path, token=b_token)
        assert r.status == 404, (path, r.text)
    r = await api.request("GET", "/v1/recordings", token=b_token)
    assert r.body["recordings"] == []
    # B's refused stop published nothing
    stop = await last_event(js, recordings.STREAM, f"recordings.{rid}.stop_requested")
    assert stop is None
    # tenant A sees it
    r = await api.request("GET", f"/v1/recordings/{rid}", token=a_token)
    assert r.status == 200 and r.body["tenant_id"] == a_id


async def test_resend_only_when_uploaded_or_retained(
    api: ApiProcess, vault: VaultProcess, js, tmp_path: Path, database_url: str
) -> None:
    await add_destination(api, tmp_path, "archive")
    await add_destination(api, tmp_path, "second")
    r = await api.request("POST", "/v1/recordings", json={"destination": "archive"})
    rid = r.body["recording_id"]
    dev = await dev_tenant_id(database_url)

    r = await api.request("POST", f"/v1/recordings/{rid}/resend")
    assert r.status == 409 and "capturing" in r.error["message"], r.text

    await publish_all(js, [f.closed(rid, dev), f.sealed(rid, dev), f.attempt(rid, dev)])
    await publish_all(js, [f.retained(rid, dev)])

    async def retained() -> bool:
        r = await api.request("GET", f"/v1/recordings/{rid}")
        return bool(r.body["state"] == "retained")

    await eventually(retained, message="state retained")
    r = await api.request("POST", f"/v1/recordings/{rid}/resend", json={"destination": "second"})
    assert r.status == 202, r.text
    assert r.body["destination"] == "second"
    resend = await last_event(js, recordings.STREAM, f"recordings.{rid}.resend_requested")
    assert isinstance(resend, recordings.ResendRequested)
    assert resend.destination_name == "second" and resend.request_id == r.body["request_id"]

    r = await api.request("POST", f"/v1/recordings/{rid}/resend", json={})
    assert r.status == 202 and r.body["destination"] == "archive", r.text
    r = await api.request("POST", f"/v1/recordings/{rid}/resend", json={"destination": "gone"})
    assert r.status == 404 and r.error["field"] == "destination", r.text
