"""Contract tests: every event version that ever went on the wire still decodes, and bad input
is rejected with an error that says where."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from shared import natsio
from shared.events import EVENT_TYPES, decode, encode, recordings, tag_of
from shared.events import deadletter as dl
from shared.schema import asyncapi, event_schemas

from .samples import build

FIXTURES = Path(__file__).parent / "fixtures"
ALL_FIXTURES = sorted(FIXTURES.glob("*/v*.json"))
TYPE_BY_TAG = {tag_of(t): t for t in EVENT_TYPES}


def test_every_event_type_has_a_fixture() -> None:
    missing = [tag_of(t) for t in EVENT_TYPES if not (FIXTURES / tag_of(t)).is_dir()]
    assert not missing, f"add fixtures with `python -m tests.contracts.make_fixtures`: {missing}"


def test_tags_are_unique() -> None:
    tags = [tag_of(t) for t in EVENT_TYPES]
    assert len(tags) == len(set(tags))


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stored_fixture_still_decodes(path: Path) -> None:
    raw = path.read_bytes()
    event = decode(raw)
    assert type(event) is TYPE_BY_TAG[path.parent.name]
    assert event.schema_version == int(path.stem[1:])
    # Re-encoding keeps every field the old document had, with the same value (fields added
    # later appear with their defaults).
    original = json.loads(raw)
    encoded = json.loads(encode(event))
    assert {k: encoded[k] for k in original} == original


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_matches_exported_json_schema(path: Path) -> None:
    schema = event_schemas()[path.parent.name]
    jsonschema.validate(json.loads(path.read_bytes()), schema)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=tag_of)
def test_round_trip(event_type: type) -> None:
    event = build(event_type)
    assert decode(encode(event)) == event


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=tag_of)
def test_unknown_extra_field_is_accepted(event_type: type) -> None:
    doc = json.loads(encode(build(event_type)))
    doc["added_by_a_newer_version"] = {"anything": [1, 2]}
    assert decode(json.dumps(doc).encode()) == build(event_type)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=tag_of)
def test_wrong_type_is_rejected_naming_the_field(event_type: type) -> None:
    doc = json.loads(encode(build(event_type)))
    doc["recording_id"] = 12345
    with pytest.raises(msgspec.ValidationError, match=r"\$\.recording_id"):
        decode(json.dumps(doc).encode())


def test_unknown_tag_is_rejected() -> None:
    doc = json.loads(encode(build(recordings.RecordingStarted)))
    doc["type"] = "recording.exploded"
    with pytest.raises(msgspec.ValidationError, match=r"Invalid value 'recording\.exploded'"):
        decode(json.dumps(doc).encode())


def test_asyncapi_document_lists_every_stream_and_event() -> None:
    doc = asyncapi()
    assert doc["asyncapi"].startswith("3.")
    assert set(doc["channels"]) == {
        "RECORDINGS",
        "CAPTURES",
        "TRANSCODES",
        "UPLOADS",
        "VAULT",
        "WEBHOOKS",
        "DEADLETTER",
    }
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == {tag_of(t) for t in EVENT_TYPES} | {"deadletter"}


async def test_undecodable_message_is_dead_lettered_and_consumer_goes_on(js) -> None:
    good = build(recordings.RecordingStopRequested)
    await js.publish("recordings.rec_0123456789abcdef01234567.stop_requested", b"not json at all")
    await js.publish(
        "recordings.rec_0123456789abcdef01234567.stop_requested",
        b'{"type":"recording.stop_requested","recording_id":5}',
    )
    await natsio.publish(js, good)
    handled: list[object] = []

    async def handler(event: object, _msg: object) -> None:
        handled.append(event)

    spec = natsio.ConsumerSpec(
        stream=recordings.STREAM,
        durable="contract-test",
        filter_subjects=("recordings.*.stop_requested",),
    )
    task = asyncio.create_task(natsio.run_consumer(js, spec, handler))
    try:
        for _ in range(100):
            if handled:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert handled == [good]

    sub = await js.pull_subscribe("deadletter.recordings", stream="DEADLETTER")
    msgs = await sub.fetch(2, timeout=5)
    decoded = [msgspec.json.decode(m.data, type=dl.DeadLetter) for m in msgs]
    assert [d.stream_seq for d in decoded] == [1, 2]
    assert all(d.consumer == "contract-test" for d in decoded)
    assert "malformed" in decoded[0].reason.lower() or "json" in decoded[0].reason.lower()
    assert "recording_id" in decoded[1].reason
    assert decoded[0].data == "not json at all"


async def test_handler_reject_dead_letters_with_its_reason(js) -> None:
    event = build(recordings.RecordingStopRequested)
    await natsio.publish(js, event)

    async def handler(_event: object, _msg: object) -> None:
        raise natsio.Reject("destination was deleted; nothing to do")

    spec = natsio.ConsumerSpec(
        stream=recordings.STREAM,
        durable="reject-test",
        filter_subjects=("recordings.*.stop_requested",),
    )
    task = asyncio.create_task(natsio.run_consumer(js, spec, handler))
    sub = await js.pull_subscribe("deadletter.recordings", stream="DEADLETTER")
    try:
        msgs = await sub.fetch(1, timeout=10)
        letter = msgspec.json.decode(msgs[0].data, type=dl.DeadLetter)
        assert letter.reason == "destination was deleted; nothing to do"
        # The term follows the dead-letter publish: give it a moment; then nothing is pending.
        for _ in range(100):
            info = await js.consumer_info("RECORDINGS", "reject-test")
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert info.num_ack_pending == 0 and info.num_pending == 0
