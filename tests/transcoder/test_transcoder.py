"""The transcoder as a real process on a real nats-server, fed captures made like the proxy's."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from msgspec.structs import replace
from nats.js import JetStreamContext

from shared import natsio
from shared.events import captures as cap
from shared.events import transcodes as tx
from shared.integrity import digest_file

from .capture_factory import (
    Capture,
    ParticipantSpec,
    SessionSpec,
    make_capture,
    publish_capture,
)
from .conftest import Transcoders, wait_event
from .media_probe import probe


async def transcode_events(js: JetStreamContext, rid: str, kind: str = ">") -> list[object]:
    return [e for _, e in await natsio.read_subject(js, tx.STREAM, tx.STREAM.filter(kind, rid))]


def check_output(capture: Capture, sealed: tx.RecordingSealed, *, tolerance: float) -> Path:
    """Every property a recipient relies on; returns the output folder."""
    out = capture.backup_root / sealed.output_dir
    assert out == capture.rec_dir / "output"
    media = [f for f in sealed.files if f.role == "media"]
    pids = sorted(p.participant_id for p in capture.participants)
    assert sorted(f.participant_id for f in media) == pids
    assert sorted(f.name for f in media) == [f"{pid}.webm" for pid in pids]
    assert {f.name for f in sealed.files if f.role != "media"} == {"SHA256SUMS", "manifest.json"}
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in sealed.files)
    # Sizes and hashes in the event are those of the files on disk.
    for f in sealed.files:
        d = digest_file(out / f.name)
        assert (d.size, d.sha256, d.crc32) == (f.size, f.sha256, f.crc32), f.name
    # The real coreutils accepts SHA256SUMS, and it lists exactly the media files.
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(line.split(": ")[0] for line in check.stdout.splitlines()) == sorted(
        f.name for f in media
    )
    # Each file decodes without a single error, has audio and video, and lasts as captured.
    for f in media:
        p = probe(out / f.name)
        assert p.errors == [], (f.name, p.errors[:5])
        assert sorted(t for t, _ in p.streams) == ["audio", "video"]
        assert dict(p.streams) == {"video": "vp8", "audio": "opus"}
        assert p.frames.get("video", 0) > 0 and p.frames.get("audio", 0) > 0
        assert p.strictly_increasing()
        span = capture.span_s(f.participant_id)
        assert abs(p.duration_s - span) <= tolerance * span, (f.name, p.duration_s, span)
        assert abs(f.duration_s - span) <= tolerance * span, (f.name, f.duration_s, span)
        assert f.content_type == "video/webm"
    # The manifest describes the recording and each file.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recording_id"] == capture.recording_id
    assert manifest["tenant_id"] == capture.tenant_id
    assert [p["participant_id"] for p in manifest["participants"]] == pids
    for p in manifest["participants"]:
        assert p["joined_at"].endswith("Z") and p["left_at"].endswith("Z")
        assert p["joined_at"] < p["left_at"]
        assert p["file"] == f"{p['participant_id']}.webm"
        spec = next(s for s in capture.participants if s.participant_id == p["participant_id"])
        assert len(p["sessions"]) == len(spec.sessions)
    by_name = {f["name"]: f for f in manifest["files"]}
    assert set(by_name) == {f.name for f in media}
    for f in media:
        entry = by_name[f.name]
        assert (entry["size"], entry["sha256"], entry["crc32"]) == (f.size, f.sha256, f.crc32)
        assert entry["duration_s"] == f.duration_s
        assert entry["codecs"] == ["video/vp8", "audio/opus"]
        expected = sorted(
            s.sha256 for s in capture.segments if s.participant_id == f.participant_id
        )
        assert sorted(s["sha256"] for s in entry["source_segments"]) == expected
    return out


async def test_two_participants_are_sealed_into_verified_files(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(
        backup_root,
        [
            ParticipantSpec("alice", sessions=(SessionSpec(0.0, 6.0),)),
            ParticipantSpec("bob", sessions=(SessionSpec(0.7, 5.0),)),
        ],
    )
    transcoders.start()
    await publish_capture(js, capture)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    assert isinstance(sealed, tx.RecordingSealed)
    assert sealed.output_dir == f"{capture.tenant_id}/{capture.recording_id}/output"
    check_output(capture, sealed, tolerance=0.10)
    # The capture is kept (the uploader purges the backup), and no staging folder is left.
    assert all(capture.segment_path(s).is_file() for s in capture.segments)
    assert not list(capture.rec_dir.glob("output.tmp-*"))
    assert [type(e) for e in await transcode_events(js, capture.recording_id)] == [
        tx.RecordingSealed
    ]


async def test_tampered_segment_is_quarantined_and_backup_kept(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))])
    victim = capture.segments[1]
    path = capture.segment_path(victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    transcoders.start()
    await publish_capture(js, capture)
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert isinstance(event, tx.RecordingQuarantined)
    assert victim.path in event.reason and "SHA-256" in event.reason
    assert await transcode_events(js, capture.recording_id, "sealed") == []
    assert all(capture.segment_path(s).is_file() for s in capture.segments)
    assert not (capture.rec_dir / "output").exists()
    assert not list(capture.rec_dir.glob("output.tmp-*"))


async def test_missing_segment_file_is_quarantined_naming_it(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))])
    victim = capture.segments[-1]
    capture.segment_path(victim).unlink()
    transcoders.start()
    await publish_capture(js, capture)
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert victim.path in event.reason and "missing" in event.reason
    assert await transcode_events(js, capture.recording_id, "sealed") == []


async def test_late_segment_event_is_waited_for(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))])
    late = capture.segments[-1]
    transcoders.start(retry_delay_s=0.5, incomplete_attempts=20)
    await publish_capture(js, capture, events=[e for e in capture.events if e is not late])
    await asyncio.sleep(2.0)  # the transcoder sees capture.closed with one segment missing
    assert await transcode_events(js, capture.recording_id) == []
    await natsio.publish(js, late)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    check_output(capture, sealed, tolerance=0.10)


async def test_segment_event_that_never_comes_quarantines(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))])
    lost = capture.segments[0]
    transcoders.start(retry_delay_s=0.2, incomplete_attempts=3)
    await publish_capture(js, capture, events=[e for e in capture.events if e is not lost])
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert "incomplete" in event.reason
    n = capture.closed.segments
    assert f"{n - 1} of {n} capture segments" in event.reason
    assert not (capture.rec_dir / "output").exists()


async def test_reconnect_keeps_the_gap_and_timestamps_increase(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(
        backup_root,
        [ParticipantSpec("bob", sessions=(SessionSpec(0.0, 5.0), SessionSpec(8.0, 5.0)))],
    )
    transcoders.start()
    await publish_capture(js, capture)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    out = check_output(capture, sealed, tolerance=0.02)
    p = probe(out / "bob.webm")
    span = capture.span_s("bob")
    assert 12.9 < span < 13.2  # 0-5 s, gap, 8-13 s of wall clock
    assert abs(p.duration_s - span) <= 0.02 * span
    assert p.strictly_increasing()
    for index, (kind, _) in enumerate(p.streams):
        # The 3 s gap is a gap in both streams, not squeezed out nor stretched.
        assert 2.8 <= p.largest_gap_s(index) <= 3.2, (kind, p.largest_gap_s(index))


async def test_killed_mid_file_restarts_and_seals_exactly_once(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(
        backup_root,
        [
            ParticipantSpec("alice", sessions=(SessionSpec(0.0, 25.0),)),
            ParticipantSpec("bob", sessions=(SessionSpec(0.5, 24.0),)),
        ],
        segment_s=5.0,
    )
    total = sum(s.size for s in capture.segments)
    # Slow the writer so the first file takes several seconds: the kill lands inside it.
    first = transcoders.start(max_write_bytes_per_s=max(total // 12, 1), ack_wait_s=3)
    await publish_capture(js, capture)
    staging_file = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while staging_file is None and loop.time() < deadline:
        found = [p for p in capture.rec_dir.glob("output.tmp-*/alice.webm") if p.stat().st_size]
        staging_file = found[0] if found else None
        await asyncio.sleep(0.02)
    assert staging_file is not None, transcoders.log_tail()
    first.kill()
    # Killed inside the first file: nothing sealed, no output folder, a staging folder left.
    assert not (capture.rec_dir / "output").exists()
    assert staging_file.parent.exists()
    assert await transcode_events(js, capture.recording_id) == []

    transcoders.start(ack_wait_s=3)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    check_output(capture, sealed, tolerance=0.10)
    assert not staging_file.parent.exists()
    await asyncio.sleep(4)  # longer than ack_wait: any redelivery would have been handled
    events = await transcode_events(js, capture.recording_id)
    assert [type(e) for e in events] == [tx.RecordingSealed]
    # The consumer has nothing left pending.
    info = await js.consumer_info(cap.STREAM.name, "transcoder")
    assert info.num_pending == 0 and info.num_ack_pending == 0


def _log_count(transcoders: Transcoders, rid: str, msg: str) -> int:
    lines = transcoders.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return sum(1 for r in records if r.get("msg") == msg and r.get("recording_id") == rid)


async def test_remux_longer_than_ack_wait_runs_once_across_two_instances(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(
        backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 10),))], segment_s=5.0
    )
    total = sum(s.size for s in capture.segments)
    slow = {"max_write_bytes_per_s": max(total // 5, 1), "ack_wait_s": 1.5}  # ~5 s per run
    transcoders.start(**slow)
    transcoders.start(**slow)
    await publish_capture(js, capture)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    check_output(capture, sealed, tolerance=0.10)
    await asyncio.sleep(2.0)
    # Progress signals kept the message with the first instance: the other never started it.
    assert _log_count(transcoders, capture.recording_id, "transcoding") == 1, transcoders.log_tail()
    assert _log_count(transcoders, capture.recording_id, "busy elsewhere; retrying later") == 0
    events = await transcode_events(js, capture.recording_id)
    assert [type(e) for e in events] == [tx.RecordingSealed]


async def test_recording_without_media_is_quarantined(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path
) -> None:
    capture = make_capture(backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 1),))])
    kept = [e for e in capture.events if isinstance(e, cap.ParticipantJoined | cap.ParticipantLeft)]
    closed = replace(capture.closed, segments=0, tracks=0)
    transcoders.start()
    await publish_capture(js, capture, events=[*kept, closed])
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert "nothing was captured" in event.reason
    assert not (capture.rec_dir / "output").exists()
