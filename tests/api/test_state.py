"""Pure folds: ``evolve`` (state) and ``apply`` (the whole read-model row)."""

from __future__ import annotations

from datetime import timedelta
from functools import reduce

import pytest

from services.api.projection import RecordingView, apply, summarize
from services.api.state import evolve
from shared.events import Event, recordings

from . import factories as f

T = "ten_0123456789abcdef"
R = "rec_0123456789abcdef01234567"


def fold_state(events: list[Event]) -> str:
    return reduce(lambda s, e: evolve(s, e), events, None) or "none"


def fold(events: list[Event]) -> RecordingView:
    view: RecordingView | None = None
    for e in events:
        view = apply(view, e)
    assert view is not None
    return view


def happy_path() -> list[Event]:
    return [
        f.started(T, R),
        f.joined(R, T, "alice", "s1"),
        f.closed(R, T),
        f.sealed(R, T),
        f.attempt(R, T),
        f.file_uploaded(R, T),
        f.uploaded(R, T),
    ]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([f.started(T, R)], "capturing"),
        ([f.started(T, R), f.closed(R, T)], "transcoding"),
        ([f.started(T, R), f.closed(R, T), f.sealed(R, T)], "uploading"),
        ([f.started(T, R), f.closed(R, T), f.attempt(R, T)], "uploading"),
        ([f.started(T, R), f.closed(R, T), f.sealed(R, T), f.uploaded(R, T)], "uploaded"),
        ([f.started(T, R), f.closed(R, T), f.sealed(R, T), f.retained(R, T)], "retained"),
        ([f.started(T, R), f.closed(R, T), f.quarantined(R, T)], "failed"),
    ],
)
def test_evolve_follows_the_life_of_a_recording(events: list[Event], expected: str) -> None:
    assert fold_state(events) == expected


def test_events_that_do_not_move_the_state_leave_it() -> None:
    events = [f.started(T, R), f.joined(R, T, "alice", "s1"), f.left(R, T, "alice", "s1")]
    assert fold_state(events) == "capturing"


def test_a_late_event_from_another_stream_never_moves_the_state_back() -> None:
    # Catching up, the uploads stream may be folded before the captures and recordings streams.
    events = [f.attempt(R, T), f.uploaded(R, T), f.sealed(R, T), f.closed(R, T), f.started(T, R)]
    assert fold_state(events) == "uploaded"


@pytest.mark.parametrize("finished", [f.uploaded, f.retained])
def test_a_resend_attempt_after_a_finished_upload_is_uploading_again(finished) -> None:  # type: ignore[no-untyped-def]
    events = [f.started(T, R), f.sealed(R, T), f.attempt(R, T), finished(R, T)]
    events.append(f.attempt(R, T, job="job2", trigger="req1"))
    assert fold_state(events) == "uploading"
    assert fold_state([*events, f.uploaded(R, T, job="job2")]) == "uploaded"


def test_apply_builds_the_row_from_every_stream() -> None:
    view = fold(happy_path())
    assert view.state == "uploaded"
    assert (view.tenant_id, view.destination, view.destination_id) == (
        T,
        "archive",
        "dst_00000000000000aa",
    )
    assert [p.participant_id for p in view.participants] == ["alice"]
    assert view.participants[0].sessions == 1
    assert view.participants[0].connected is False  # closed
    by_name = {x.name: x for x in view.files}
    assert set(by_name) == {"alice.webm", "SHA256SUMS"}
    assert by_name["alice.webm"].role == "media"
    assert by_name["alice.webm"].remote_uri == "s3://bucket/t/alice.webm"
    assert by_name["SHA256SUMS"].sha256 == "cd" * 32


def test_apply_in_another_order_gives_the_same_row() -> None:
    events = happy_path()
    # uploads first, then transcodes, then captures, then recordings
    reordered = [events[4], events[5], events[6], events[3], events[1], events[2], events[0]]
    a, b = fold(events), fold(reordered)
    assert (a.state, a.destination, a.label) == (b.state, b.destination, b.label)
    assert sorted((x.name, x.role, x.remote_uri) for x in a.files) == sorted(
        (x.name, x.role, x.remote_uri) for x in b.files
    )
    assert a.created_at == events[0].occurred_at == b.created_at


def test_apply_does_not_change_the_view_it_was_given() -> None:
    first = apply(None, f.started(T, R))
    second = apply(first, f.joined(R, T, "bob", "s1"))
    assert first.participants == [] and len(second.participants) == 1


def test_reconnects_count_sessions() -> None:
    view = fold(
        [
            f.started(T, R),
            f.joined(R, T, "bob", "s1"),
            f.left(R, T, "bob", "s1"),
            f.joined(R, T, "bob", "s2"),
        ]
    )
    assert view.participants[0].sessions == 2 and view.participants[0].connected


def test_updated_at_is_the_newest_event() -> None:
    start = f.started(T, R)
    later = recordings.RecordingStopRequested(
        event_id="x",
        recording_id=R,
        tenant_id=T,
        occurred_at=start.occurred_at + timedelta(seconds=5),
    )
    view = fold([start, later])
    assert view.updated_at == later.occurred_at and view.stop_requested


def test_summaries_leave_out_the_envelope_and_the_token_hash() -> None:
    s = summarize(f.started(T, R, token="secret-token", label="weekly"))
    assert "whip_token_sha256" not in s and "tenant_id" not in s and "type" not in s
    assert s["label"] == "weekly" and s["destination_name"] == "archive"
