"""Pure planning: file names, stream timelines, VP8/Opus header parsing, frame timestamps."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from msgspec.structs import replace

from services.transcoder.bitstream import opus_duration_ms, vp8_dimensions, vp8_is_keyframe
from services.transcoder.errors import PlanError
from services.transcoder.plan import (
    StreamPlan,
    TrackPlan,
    plan_files,
    rtp_to_ms,
    timed_frames,
)
from services.transcoder.state import fold
from shared.capture_format import Frame
from shared.events import captures as cap

from .capture_factory import ParticipantSpec, SessionSpec, make_capture, video_packets

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_vp8_dimensions_from_a_real_key_frame() -> None:
    (key, data), (key2, inter) = video_packets(2)[:2]
    assert key and not key2
    assert vp8_is_keyframe(data) and not vp8_is_keyframe(inter)
    assert vp8_dimensions(data) == (320, 240)
    assert vp8_dimensions(inter) is None


def test_vp8_dimensions_ignore_the_scaling_bits() -> None:
    tag = bytes([0x50, 0x42, 0x00])  # key frame (bit 0 clear), version 0, shown
    header = tag + b"\x9d\x01\x2a" + (1280 | 2 << 14).to_bytes(2, "little")
    header += (720 | 1 << 14).to_bytes(2, "little")
    assert vp8_dimensions(header) == (1280, 720)
    assert vp8_dimensions(header[:9]) is None  # truncated
    assert vp8_dimensions(tag + b"\x00\x00\x00" + header[6:]) is None  # no start code


@pytest.mark.parametrize(
    ("packet", "ms"),
    [
        (bytes([31 << 3 | 0]), 20.0),  # CELT 20 ms, one frame
        (bytes([16 << 3 | 0]), 2.5),  # CELT 2.5 ms
        (bytes([1 << 3 | 1]), 40.0),  # SILK 20 ms, two frames
        (bytes([3 << 3 | 2]), 120.0),  # SILK 60 ms, two frames (different sizes)
        (bytes([13 << 3 | 3, 3]), 60.0),  # hybrid 20 ms, code 3 with 3 frames
        (bytes([13 << 3 | 3]), None),  # code 3 without its count byte
        (b"", None),
    ],
)
def test_opus_duration_from_toc(packet: bytes, ms: float | None) -> None:
    assert opus_duration_ms(packet) == ms


def test_files_are_named_per_participant_and_container(tmp_path: Path) -> None:
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec("bob", sessions=(SessionSpec(0, 1),)),
            ParticipantSpec("alice", sessions=(SessionSpec(0, 1),), video="video/H264"),
            ParticipantSpec("carol", sessions=(SessionSpec(0, 1),), video=None),
        ],
    )
    plans = plan_files(fold(c.events))
    assert [(p.name, p.container, p.content_type) for p in plans] == [
        ("alice.mkv", "matroska", "video/x-matroska"),
        ("bob.webm", "webm", "video/webm"),
        ("carol.webm", "webm", "audio/webm"),
    ]
    assert plans[0].codecs == ["video/h264", "audio/opus"]
    assert [s.kind for s in plans[2].streams] == ["audio"]
    assert sorted(s.path for p in plans for s in p.segments) == sorted(s.path for s in c.segments)


def test_timeline_is_anchored_on_wall_clock_and_keeps_reconnect_gaps(tmp_path: Path) -> None:
    c = make_capture(
        tmp_path,
        [ParticipantSpec("bob", sessions=(SessionSpec(0, 2), SessionSpec(5, 2)))],
        audio_lag_s=0.04,
    )
    (plan,) = plan_files(fold(c.events))
    video, audio = plan.streams
    assert [t.start_ms for t in video.tracks] == [0, 5000]
    assert [t.start_ms for t in audio.tracks] == [40, 5040]
    assert video.tracks[0].end_ms == 1967  # 59 frames after the first at 30 fps
    assert plan.t0_ns == min(t.first_wallclock_ns for t in c.tracks)
    assert rtp_to_ms(video.tracks[1], 90_000) == 6000


def test_overlapping_sessions_play_one_after_the_other(tmp_path: Path) -> None:
    c = make_capture(
        tmp_path, [ParticipantSpec("bob", sessions=(SessionSpec(0, 3), SessionSpec(2, 2)))]
    )
    (plan,) = plan_files(fold(c.events))
    for stream in plan.streams:
        first, second = stream.tracks
        assert second.start_ms > first.end_ms
        assert second.start_ms - first.end_ms == stream.info.default_frame_ms


def test_codec_that_cannot_be_remuxed_is_a_plan_error(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("bob", sessions=(SessionSpec(0, 1),))])
    events = [
        replace(e, codec="video/AV1") if isinstance(e, cap.TrackStarted) and e.kind == "video"
        else e
        for e in c.events
    ]  # fmt: skip
    with pytest.raises(PlanError, match="bob-s1-video has codec video/AV1"):
        plan_files(fold(events))


def test_participant_id_unfit_for_a_file_name_is_a_plan_error(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("bob", sessions=(SessionSpec(0, 1),))])
    events = [
        replace(e, participant_id="../bob") if hasattr(e, "participant_id") else e for e in c.events
    ]
    with pytest.raises(PlanError, match="cannot be used as a file name"):
        plan_files(fold(events))


def test_participant_without_media_gets_no_file(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("bob", sessions=(SessionSpec(0, 1),))])
    only_joins = [e for e in c.events if not isinstance(e, cap.TrackStarted | cap.SegmentWritten)]
    assert plan_files(fold(only_joins)) == []


def _track(track_id: str, start_ms: int, clock: int = 90_000) -> TrackPlan:
    return TrackPlan(track_id, "s1", "video/vp8", clock, 0, 0, start_ms, start_ms + 1000, ())


def _vp8(key: bool) -> bytes:
    return bytes([0x10 if key else 0x11]) + b"\x00" * 9


def test_timed_frames_start_at_a_key_frame_and_strictly_increase() -> None:
    a, b = _track("a", 0), _track("b", 500)
    stream = StreamPlan("video", "video/vp8", (a, b))
    frames = {
        # Two undecodable frames before the first key frame, then a repeated RTP timestamp.
        "a": [
            Frame(0, 0, False, _vp8(False)),
            Frame(3000, 0, False, _vp8(False)),
            Frame(6000, 0, True, _vp8(True)),
            Frame(6000, 0, False, _vp8(False)),
            Frame(9000, 0, False, _vp8(False)),
        ],
        # The next track starts at its own planned offset (its RTP clock restarts at 0).
        "b": [Frame(0, 0, True, _vp8(True)), Frame(3000, 0, False, _vp8(False))],
    }
    out = list(timed_frames(stream, lambda t: frames[t.track_id], stream_index=1))
    assert [f.pts_ms for f in out] == [67, 68, 100, 500, 533]
    assert [f.keyframe for f in out] == [True, False, False, True, False]
    assert all(b.pts_ms > a.pts_ms for a, b in itertools.pairwise(out))
    assert [f.duration_ms for f in out] == [1, 32, 32, 33, 33]
    assert {f.stream_index for f in out} == {1}


def test_timed_opus_frames_take_their_duration_from_the_packet() -> None:
    track = TrackPlan("a", "s1", "audio/opus", 48_000, 2, 0, 40, 100, ())
    stream = StreamPlan("audio", "audio/opus", (track,))
    toc20, toc40 = bytes([31 << 3]), bytes([1 << 3 | 1])
    frames = [Frame(0, 0, True, toc20), Frame(960, 0, True, toc40), Frame(2880, 0, True, toc20)]
    out = list(timed_frames(stream, lambda t: frames))
    assert [(f.pts_ms, f.duration_ms) for f in out] == [(40, 20), (60, 40), (100, 20)]
