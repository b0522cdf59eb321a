"""Destinations through the API and the real vault: validation errors name the field, and a
canary secret never shows up in a response, the API's log, or any stream."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from shared.events import STREAMS

from .support import ApiProcess, VaultProcess, add_destination


def s3_body(name: str, canary: str, **overrides: Any) -> dict[str, Any]:
    config = {
        "bucket": "recordings",
        "region": "eu-west-1",
        "access_key_id": f"AKIDCANARY{canary[:6]}",
        "secret_access_key": canary,
    }
    config.update(overrides)
    return {"name": name, "provider": "s3", "config": config, "probe": False}


async def all_stream_bytes(js: Any) -> bytes:
    out = b""
    for spec in STREAMS:
        info = await js.stream_info(spec.name)
        if not info.state.messages:
            continue
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(spec.name, seq)
            out += msg.data or b""
    return out


async def test_create_list_show_delete_without_ever_echoing_the_secret(
    api: ApiProcess, vault: VaultProcess, js
) -> None:
    canary = "CANARY-" + secrets.token_hex(16)
    texts: list[str] = []

    r = await api.request("POST", "/v1/destinations", json=s3_body("backup-eu", canary))
    texts.append(r.text)
    assert r.status == 201, r.text
    assert r.body["name"] == "backup-eu" and r.body["provider"] == "s3"
    assert r.body["destination_id"].startswith("dst_")
    assert r.body["config"] == {"bucket": "recordings", "region": "eu-west-1"}
    assert sorted(r.body["secret_fields"]) == ["access_key_id", "secret_access_key"]

    r = await api.request("GET", "/v1/destinations")
    texts.append(r.text)
    assert [d["name"] for d in r.body["destinations"]] == ["backup-eu"]
    r = await api.request("GET", "/v1/destinations/backup-eu")
    texts.append(r.text)
    assert r.status == 200 and r.body["config"]["bucket"] == "recordings"

    # errors after a secret was sent: still not echoed
    for bad in (
        s3_body("backup-eu", canary),  # duplicate
        s3_body("other", canary, verify=canary),  # a bad value in a choice field
        s3_body("other", canary, nonsense=canary),  # unknown field
    ):
        r = await api.request("POST", "/v1/destinations", json=bad)
        texts.append(r.text)
        assert 400 <= r.status < 500, r.text

    r = await api.request("DELETE", "/v1/destinations/backup-eu")
    texts.append(r.text)
    assert r.status == 200, r.text
    r = await api.request("GET", "/v1/destinations/backup-eu")
    assert r.status == 404, r.text

    for text in texts:
        assert canary not in text and canary[:16] not in text
    assert canary not in api.log_text()
    assert canary.encode() not in await all_stream_bytes(js)


async def test_validation_errors_name_the_field(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path
) -> None:
    canary = "CANARY-" + secrets.token_hex(8)
    cases = [
        (s3_body("x1", canary, bucket=""), 422, "config.bucket"),
        (s3_body("x2", canary, nonsense="1"), 422, "config.nonsense"),
        ({**s3_body("x3", canary), "provider": "ftp-of-doom"}, 422, "provider"),
        ({**s3_body("../etc", canary)}, 422, "name"),
        ({"name": "x4", "provider": "s3", "config": "not-an-object"}, 422, "config"),
        ({"name": "x5", "config": {}}, 422, "provider"),
        ({**s3_body("x6", canary), "extra": 1}, 422, "extra"),
    ]
    for body, status, field in cases:
        r = await api.request("POST", "/v1/destinations", json=body)
        assert (r.status, r.error["field"]) == (status, field), (body.get("name"), r.text)
        assert r.error["message"] and canary not in r.text
    await add_destination(api, tmp_path, "dupe")
    r = await api.request(
        "POST",
        "/v1/destinations",
        json={"name": "dupe", "provider": "file", "config": {"path": str(tmp_path)}},
    )
    assert r.status == 409 and r.error["field"] == "name", r.text


async def test_unknown_destination_is_404(api: ApiProcess, vault: VaultProcess) -> None:
    for method in ("GET", "DELETE"):
        r = await api.request(method, "/v1/destinations/nothing")
        assert r.status == 404, r.text
    r = await api.request("GET", "/v1/destinations/..%2f..")
    assert 400 <= r.status < 500


async def test_oversized_bodies_are_refused_before_the_vault(
    api: ApiProcess, vault: VaultProcess
) -> None:
    huge = s3_body("big", "x" * 1_000_000)
    r = await api.request("POST", "/v1/destinations", json=huge)
    assert r.status == 413, r.text
    assert "x" * 100 not in r.text


async def test_destinations_are_per_tenant(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path
) -> None:
    _, other = await api.create_tenant("other")
    await add_destination(api, tmp_path, "shared-name")
    r = await api.request("GET", "/v1/destinations", token=other)
    assert r.status == 200 and r.body["destinations"] == []
    r = await api.request("GET", "/v1/destinations/shared-name", token=other)
    assert r.status == 404
    r = await api.request("DELETE", "/v1/destinations/shared-name", token=other)
    assert r.status == 404
    # the other tenant may use the same name, and cannot start a recording on dev's
    r = await api.request(
        "POST", "/v1/recordings", token=other, json={"destination": "shared-name"}
    )
    assert r.status == 404 and r.error["field"] == "destination"
    await add_destination(api, tmp_path, "shared-name", token=other)
    r = await api.request("GET", "/v1/destinations/shared-name")
    assert r.status == 200


async def test_destination_output_format_reaches_the_transcoder_through_the_event(
    api: ApiProcess, vault: VaultProcess, js, tmp_path: Path
) -> None:
    from shared import natsio
    from shared.events import recordings

    body = {
        "name": "as-mp4",
        "provider": "file",
        "config": {"path": str(tmp_path / "out"), "output_format": "mp4", "output_tracks": "audio"},
        "probe": False,
    }
    r = await api.request("POST", "/v1/destinations", json=body)
    assert r.status == 201, r.text
    started = await api.request("POST", "/v1/recordings", json={"destination": "as-mp4"})
    assert started.status == 201, started.text
    rid = started.body["recording_id"]
    event = await natsio.last_event(js, recordings.STREAM, f"recordings.{rid}.started")
    assert isinstance(event, recordings.RecordingStarted)
    assert (event.output_format, event.output_tracks) == ("mp4", "audio")

    bad = {**body, "name": "as-avi", "config": {**body["config"], "output_format": "avi"}}
    r = await api.request("POST", "/v1/destinations", json=bad)
    assert r.status == 422 and "output_format" in r.text
