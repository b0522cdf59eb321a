"""The output folder built in-process (no NATS): containers, determinism, crash leftovers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec.structs import replace

from services.transcoder.errors import SegmentInvalid
from services.transcoder.manifest import iso
from services.transcoder.output import build_output
from services.transcoder.plan import plan_files
from services.transcoder.remux import Throttle
from services.transcoder.state import fold
from shared.events import captures as cap

from .capture_factory import ParticipantSpec, SessionSpec, make_capture
from .media_probe import probe
from .sealed import opened

KEY = Ed25519PrivateKey.generate()


def test_h264_goes_into_matroska_with_its_picture_size(tmp_path: Path) -> None:
    c = make_capture(
        tmp_path, [ParticipantSpec("dana", sessions=(SessionSpec(0, 4),), video="video/H264")]
    )
    state = fold(c.events)
    sealed = opened(
        c, build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)
    )
    media = [f for f in sealed.files if f.role == "media"]
    assert [(f.name, f.content_type) for f in media] == [("dana.mkv", "video/x-matroska")]
    path = sealed.output / "dana.mkv"
    p = probe(path)
    assert p.errors == []
    assert dict(p.streams) == {"video": "h264", "audio": "opus"}
    assert p.frames["video"] == 120
    with av.open(str(path)) as container:
        v = container.streams.video[0].codec_context
        assert (v.width, v.height) == (320, 240)
    assert abs(p.duration_s - c.span_s("dana")) <= 0.1 * c.span_s("dana")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=sealed.output)
    assert check.returncode == 0


def test_same_capture_gives_the_same_bytes(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("erin", sessions=(SessionSpec(0, 3),))])
    state = fold(c.events)
    first = build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)
    shutil.rmtree(first.output)
    second = build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)
    # The same plaintext (what the event describes), under the same stored names; the stored
    # bytes differ, since every file written gets a fresh salt (hence a fresh chunk key).
    assert first.files == second.files
    assert set(first.stored_sha256) == set(second.stored_sha256)
    assert not set(first.stored_sha256.values()) & set(second.stored_sha256.values())


def test_leftovers_of_a_crashed_run_are_replaced(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("erin", sessions=(SessionSpec(0, 2),))])
    state = fold(c.events)
    stale_staging = c.rec_dir / "output.tmp-deadbeef"
    stale_staging.mkdir()
    (stale_staging / "erin.webm").write_bytes(b"half a file")
    stale_output = c.rec_dir / "output"
    stale_output.mkdir()
    (stale_output / "junk.webm").write_bytes(b"never sealed")
    sealed = build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)
    assert not stale_staging.exists()
    (media,) = [f for f in sealed.files if f.role == "media"]
    assert media.name == "erin.webm" and media.stored_name != media.name
    assert sorted(p.name for p in sealed.output.iterdir()) == sorted(
        ["SHA256SUMS", media.stored_name, "manifest.json", "manifest.json.sig"]
    )
    sealed = opened(c, sealed)
    manifest = json.loads((sealed.output / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["erin.webm"]


def test_appended_byte_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("erin", sessions=(SessionSpec(0, 2),))])
    seg = c.segments[0]
    with c.segment_path(seg).open("ab") as fh:
        fh.write(b"\x00")
    state = fold(c.events)
    with pytest.raises(SegmentInvalid, match=f"{seg.path} fails authentication"):
        build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)
    assert sorted(p.name for p in c.rec_dir.iterdir()) == ["capture"]


def test_segment_path_leaving_the_recording_folder_is_refused(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("erin", sessions=(SessionSpec(0, 2),))])
    seg = c.segments[0]
    bad = replace(seg, path="../../../etc/passwd")
    events = [bad if e is seg else e for e in c.events]
    state = fold(events)
    with pytest.raises(SegmentInvalid, match="leaves the recording folder"):
        build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)


def test_audio_only_participant(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("finn", sessions=(SessionSpec(0, 3),), video=None)])
    state = fold(c.events)
    sealed = opened(
        c, build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)
    )
    p = probe(sealed.output / "finn.webm")
    assert p.errors == [] and [t for t, _ in p.streams] == ["audio"]
    assert p.frames["audio"] == 150
    assert not any(isinstance(e, cap.TrackStarted) and e.kind == "video" for e in c.events)


def test_throttle_keeps_under_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    t = Throttle(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        t.spent(500)
    assert now[0] == pytest.approx(5.0, abs=0.03)  # 5000 bytes at 1000 B/s
    free = Throttle(0, clock=lambda: now[0], sleep=sleep)
    before = len(slept)
    free.spent(10**9)
    assert len(slept) == before


def test_iso_times_are_utc_with_milliseconds() -> None:
    assert iso(1_780_000_000_123_456_789) == "2026-05-28T20:26:40.123Z"
    assert iso(None) is None
