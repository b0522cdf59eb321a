"""Pure fold and completeness checks over CAPTURES events."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from msgspec.structs import replace

from services.transcoder.state import RecordingCapture, evolve, fold, missing_parts
from shared.events import captures as cap

from .capture_factory import Capture, ParticipantSpec, SessionSpec, make_capture

T = datetime(2026, 1, 1, tzinfo=UTC)


def two_people(root: Path) -> Capture:
    return make_capture(
        root,
        [
            ParticipantSpec("alice", sessions=(SessionSpec(0, 3),)),
            ParticipantSpec("bob", sessions=(SessionSpec(0, 2), SessionSpec(4, 2))),
        ],
        segment_s=1.0,
    )


def test_fold_builds_participants_sessions_tracks_and_ordered_segments(tmp_path: Path) -> None:
    c = two_people(tmp_path)
    events = list(c.events)
    random.Random(7).shuffle(events)  # arrival order across tracks is not guaranteed
    state = fold(events)
    assert state.recording_id == c.recording_id and state.tenant_id == c.tenant_id
    assert sorted(state.participants) == ["alice", "bob"]
    bob = state.participants["bob"]
    assert [s.session_id for s in bob.sessions] == ["s1", "s2"]
    assert all(s.left_at_ns and s.left_at_ns > s.joined_at_ns for s in bob.sessions)
    assert bob.sessions[0].leave_reason == "left"
    assert len(state.tracks) == 6
    assert [t.session_id for t in state.tracks_of("bob")] == ["s1", "s1", "s2", "s2"]
    video = state.tracks["alice-s1-video"]
    assert (video.kind, video.codec, video.clock_rate) == ("video", "video/VP8", 90_000)
    assert set(state.ended) == set(state.tracks)
    segs = state.segments_of("alice-s1-video")
    assert [s.seq for s in segs] == list(range(len(segs))) and len(segs) >= 3
    assert state.closed == c.closed
    assert missing_parts(state) == []


def test_repeated_events_change_nothing(tmp_path: Path) -> None:
    c = two_people(tmp_path)
    once = fold(c.events)
    assert fold(c.events + c.events) == once
    # A redelivered copy with a different body (e.g. a re-published segment) keeps the first.
    seg = c.segments[0]
    assert evolve(once, replace(seg, sha256="0" * 64)) == once


def test_evolve_never_changes_its_input(tmp_path: Path) -> None:
    c = two_people(tmp_path)
    before = fold(c.events[:-3])
    snapshot = (dict(before.participants), dict(before.tracks), dict(before.segments))
    after = fold(c.events[-3:], before)
    assert (dict(before.participants), dict(before.tracks), dict(before.segments)) == snapshot
    assert after != before


def test_missing_parts_names_what_is_missing(tmp_path: Path) -> None:
    c = two_people(tmp_path)
    closed = c.closed
    assert missing_parts(fold(e for e in c.events if e is not closed)) == [
        "the capture is not closed yet"
    ]

    hole = c.tracks_of("alice")[0].segments[1]
    problems = missing_parts(fold(e for e in c.events if e is not hole))
    n = closed.segments
    assert problems == [
        f"{n - 1} of {n} capture segments are recorded",
        f"track {hole.track_id} is missing segment 1",
    ]

    started = next(
        e for e in c.events if isinstance(e, cap.TrackStarted) and e.track_id == "bob-s2-audio"
    )
    problems = missing_parts(fold(e for e in c.events if e is not started))
    assert f"{len(c.tracks) - 1} of {len(c.tracks)} tracks are recorded" in problems
    assert "segments of track bob-s2-audio arrived without its track_started" in problems


def test_more_segments_than_announced_is_not_a_hole(tmp_path: Path) -> None:
    c = two_people(tmp_path)
    fewer = replace(c.closed, segments=c.closed.segments - 2)
    state = fold([e for e in c.events if e is not c.closed] + [fewer])
    assert missing_parts(state) == []


def test_leave_without_join_still_records_the_session() -> None:
    left = cap.ParticipantLeft(
        event_id="x",
        recording_id="rec_0123456789abcdef01234567",
        tenant_id="ten_0123456789abcdef",
        occurred_at=T,
        participant_id="carol",
        session_id="s9",
        reason="proxy restarted",
        left_at_ns=5,
    )
    state = evolve(RecordingCapture(), left)
    (session,) = state.participants["carol"].sessions
    assert (session.session_id, session.left_at_ns, session.leave_reason) == (
        "s9",
        5,
        "proxy restarted",
    )
