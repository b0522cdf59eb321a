"""The transcoder as a real process on a real nats-server, fed captures made like the proxy's."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from msgspec.structs import replace
from nats.js import JetStreamContext

from shared import natsio, signing
from shared.events import captures as cap
from shared.events import transcodes as tx
from shared.integrity import digest_file

from .capture_factory import (
    Capture,
    ParticipantSpec,
    SessionSpec,
    publish_capture,
)
from .conftest import Transcoders, Vault, wait_event
from .media_probe import probe
from .sealed import assert_no_plaintext, plain_copy


async def transcode_events(js: JetStreamContext, rid: str, kind: str = ">") -> list[object]:
    return [e for _, e in await natsio.read_subject(js, tx.STREAM, tx.STREAM.filter(kind, rid))]


def check_output(
    capture: Capture, sealed: tx.RecordingSealed, *, tolerance: float, data_dir: Path
) -> Path:
    """Every property a recipient relies on, checked on a decrypted copy of the output (the
    backup holds it encrypted, media under pseudonyms); returns that copy's folder."""
    out = capture.backup_root / sealed.output_dir
    # Each attempt seals its own folder; only the sealed one is left.
    assert out.parent == capture.rec_dir and out.name.startswith("output-")
    assert [p.name for p in capture.rec_dir.glob("output*")] == [out.name]
    everything = [f for f in sealed.files if f.role == "media"]
    (composite,) = [f for f in everything if not f.participant_id]
    media = [f for f in everything if f.participant_id]
    assert composite.name == "composite.webm" and composite.content_type == "video/webm"
    pids = sorted(p.participant_id for p in capture.participants)
    assert sorted(f.participant_id for f in media) == pids
    assert sorted(f.name for f in media) == [f"{pid}.webm" for pid in pids]
    assert {(f.name, f.role) for f in sealed.files if f.role != "media"} == {
        ("SHA256SUMS", "checksums"),
        ("manifest.json", "manifest"),
        ("manifest.json.sig", "signature"),
    }
    # In the backup: each file under its stored name; a media file's says nothing of its name.
    assert sorted(p.name for p in out.iterdir()) == sorted(f.stored_name for f in sealed.files)
    for f in everything:
        assert isinstance(f.stored_as, str) and f.stored_as.startswith("n"), f
        assert f.name.split(".")[0] not in f.stored_as
    assert_no_plaintext(capture.backup_root, capture)
    out = plain_copy(capture, out, sealed.files, data_dir.parent / "plain" / out.name)
    # The manifest is signed with the operator's key, and `resguardo verify` accepts the folder.
    key = signing.load_or_create(signing.key_path(data_dir))
    manifest_raw = (out / "manifest.json").read_bytes()
    assert signing.verify(
        signing.public_pem(key), manifest_raw, (out / "manifest.json.sig").read_text()
    )
    pem = data_dir / "signing.pub.pem"
    pem.write_text(signing.public_pem(key))
    verified = subprocess.run(
        [sys.executable, "-m", "resguardo", "verify", str(out), "--public-key", str(pem)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Sizes and hashes in the event are those of the decrypted files.
    for f in sealed.files:
        d = digest_file(out / f.name)
        assert (d.size, d.sha256, d.crc32) == (f.size, f.sha256, f.crc32), f.name
    # The real coreutils accepts SHA256SUMS, and it lists exactly the media files.
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(line.split(": ")[0] for line in check.stdout.splitlines()) == sorted(
        f.name for f in everything
    )
    # The composite decodes and lasts as long as the call.
    cp = probe(out / composite.name)
    call = capture.call_span_s()
    assert cp.errors == [] and dict(cp.streams) == {"video": "vp8", "audio": "opus"}
    assert abs(cp.duration_s - call) <= 0.02 * call, (cp.duration_s, call)
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
    manifest = json.loads(manifest_raw)
    assert manifest["signing_key_id"] == signing.key_id(key.public_key())
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
    assert set(by_name) == {f.name for f in everything}
    assert sorted(s["sha256"] for s in by_name[composite.name]["source_segments"]) == sorted(
        s.sha256 for s in capture.segments
    )
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
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js,
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
    assert sealed.output_dir.startswith(f"{capture.tenant_id}/{capture.recording_id}/output-")
    check_output(capture, sealed, tolerance=0.10, data_dir=transcoders.data_dir)
    # The capture is kept (the uploader purges the backup), and no staging folder is left.
    assert all(capture.segment_path(s).is_file() for s in capture.segments)
    assert not list(capture.rec_dir.glob("output.tmp-*"))
    assert [type(e) for e in await transcode_events(js, capture.recording_id)] == [
        tx.RecordingSealed
    ]


async def test_tampered_segment_is_quarantined_and_backup_kept(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js, backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))]
    )
    victim = capture.segments[1]
    path = capture.segment_path(victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    transcoders.start()
    await publish_capture(js, capture)
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert isinstance(event, tx.RecordingQuarantined)
    assert victim.path in event.reason and "fails authentication" in event.reason
    assert await transcode_events(js, capture.recording_id, "sealed") == []
    assert all(capture.segment_path(s).is_file() for s in capture.segments)
    assert not list(capture.rec_dir.glob("output-*"))
    assert not list(capture.rec_dir.glob("output.tmp-*"))


async def test_missing_segment_file_is_quarantined_naming_it(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js, backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))]
    )
    victim = capture.segments[-1]
    capture.segment_path(victim).unlink()
    transcoders.start()
    await publish_capture(js, capture)
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert victim.path in event.reason and "missing" in event.reason
    assert await transcode_events(js, capture.recording_id, "sealed") == []


async def test_late_segment_event_is_waited_for(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js, backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))]
    )
    late = capture.segments[-1]
    transcoders.start(retry_delay_s=0.5, incomplete_attempts=20)
    await publish_capture(js, capture, events=[e for e in capture.events if e is not late])
    await asyncio.sleep(2.0)  # the transcoder sees capture.closed with one segment missing
    assert await transcode_events(js, capture.recording_id) == []
    await natsio.publish(js, late)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    check_output(capture, sealed, tolerance=0.10, data_dir=transcoders.data_dir)


async def test_segment_event_that_never_comes_quarantines(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js, backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))]
    )
    lost = capture.segments[0]
    transcoders.start(retry_delay_s=0.2, incomplete_attempts=3)
    await publish_capture(js, capture, events=[e for e in capture.events if e is not lost])
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert "incomplete" in event.reason
    n = capture.closed.segments
    assert f"{n - 1} of {n} capture segments" in event.reason
    assert not list(capture.rec_dir.glob("output-*"))


async def test_reconnect_keeps_the_gap_and_timestamps_increase(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js,
        backup_root,
        [ParticipantSpec("bob", sessions=(SessionSpec(0.0, 5.0), SessionSpec(8.0, 5.0)))],
    )
    transcoders.start()
    await publish_capture(js, capture)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    out = check_output(capture, sealed, tolerance=0.02, data_dir=transcoders.data_dir)
    p = probe(out / "bob.webm")
    span = capture.span_s("bob")
    assert 12.9 < span < 13.2  # 0-5 s, gap, 8-13 s of wall clock
    assert abs(p.duration_s - span) <= 0.02 * span
    assert p.strictly_increasing()
    for index, (kind, _) in enumerate(p.streams):
        # The 3 s gap is a gap in both streams, not squeezed out nor stretched.
        assert 2.8 <= p.largest_gap_s(index) <= 3.2, (kind, p.largest_gap_s(index))


async def test_killed_mid_file_restarts_and_seals_exactly_once(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js,
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
        # Media files are written under pseudonyms ("n" and hex), and sealed chunk by chunk.
        found = [p for p in capture.rec_dir.glob("output.tmp-*/n*") if p.stat().st_size]
        staging_file = found[0] if found else None
        await asyncio.sleep(0.02)
    assert staging_file is not None, transcoders.log_tail()
    first.kill()
    # Killed inside the first file: nothing sealed, no output folder, a staging folder left.
    assert not list(capture.rec_dir.glob("output-*"))
    assert staging_file.parent.exists()
    assert await transcode_events(js, capture.recording_id) == []

    transcoders.start(ack_wait_s=3)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    check_output(capture, sealed, tolerance=0.10, data_dir=transcoders.data_dir)
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
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js, backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 10),))], segment_s=5.0
    )
    total = sum(s.size for s in capture.segments)
    slow = {"max_write_bytes_per_s": max(total // 5, 1), "ack_wait_s": 1.5}  # ~5 s per run
    transcoders.start(**slow)
    transcoders.start(**slow)
    await publish_capture(js, capture)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    check_output(capture, sealed, tolerance=0.10, data_dir=transcoders.data_dir)
    await asyncio.sleep(2.0)
    # Progress signals kept the message with the first instance: the other never started it.
    assert _log_count(transcoders, capture.recording_id, "transcoding") == 1, transcoders.log_tail()
    assert _log_count(transcoders, capture.recording_id, "busy elsewhere; retrying later") == 0
    events = await transcode_events(js, capture.recording_id)
    assert [type(e) for e in events] == [tx.RecordingSealed]


async def test_recording_without_media_is_quarantined(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js, backup_root, [ParticipantSpec("alice", sessions=(SessionSpec(0, 1),))]
    )
    kept = [e for e in capture.events if isinstance(e, cap.ParticipantJoined | cap.ParticipantLeft)]
    closed = replace(capture.closed, segments=0, tracks=0)
    transcoders.start()
    await publish_capture(js, capture, events=[*kept, closed])
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert "nothing was captured" in event.reason
    assert not list(capture.rec_dir.glob("output-*"))


async def test_destination_asking_for_mp4_gets_mp4(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(
        js,
        backup_root,
        [ParticipantSpec("alice", sessions=(SessionSpec(0, 3),))],
        started={"output_format": "mp4", "output_tracks": "av"},
    )
    transcoders.start()
    await publish_capture(js, capture)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    media = sorted((f.name, f.content_type) for f in sealed.files if f.role == "media")
    assert media == [("alice.mp4", "video/mp4"), ("composite.mp4", "video/mp4")]
    out = capture.backup_root / sealed.output_dir
    assert_no_plaintext(capture.backup_root, capture)
    out = plain_copy(capture, out, sealed.files, transcoders.data_dir.parent / "plain")
    for name, _ in media:
        p = probe(out / name)
        assert p.errors == [] and dict(p.streams) == {"video": "h264", "audio": "aac"}
