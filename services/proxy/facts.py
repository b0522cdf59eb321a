"""Capture facts: deterministic event ids, and the pure folds the stop handler decides with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.events import captures as cap
from shared.events import event_id, now
from shared.events.base import Event


def joined_id(rid: str, session_id: str) -> str:
    return event_id(rid, "participant_joined", session_id)


def track_started_id(rid: str, track_id: str) -> str:
    return event_id(rid, "track_started", track_id)


def segment_id(rid: str, track_id: str, seq: int) -> str:
    return event_id(rid, "segment", track_id, seq)


def track_ended_id(rid: str, track_id: str) -> str:
    return event_id(rid, "track_ended", track_id)


def left_id(rid: str, session_id: str) -> str:
    return event_id(rid, "participant_left", session_id)


def closed_id(rid: str) -> str:
    return event_id(rid, "capture_closed")


def track_id_for(participant_id: str, session_id: str, kind: str) -> str:
    return f"{participant_id}-{session_id}-{kind}"


@dataclass
class CaptureState:
    """What the CAPTURES history of one recording says (folded with ``evolve``)."""

    joined: dict[str, cap.ParticipantJoined] = field(default_factory=dict)  # by session id
    left: set[str] = field(default_factory=set)  # session ids
    tracks: dict[str, cap.TrackStarted] = field(default_factory=dict)  # by track id
    ended: set[str] = field(default_factory=set)  # track ids
    segments: dict[tuple[str, int], cap.SegmentWritten] = field(default_factory=dict)
    closed: cap.CaptureClosed | None = None


def still_open(state: CaptureState) -> int:
    """Tracks and sessions the history has not seen end: live somewhere, or on a dead proxy."""
    open_tracks = sum(1 for t in state.tracks if t not in state.ended)
    return open_tracks + sum(1 for s in state.joined if s not in state.left)


def evolve(state: CaptureState, event: Event) -> CaptureState:
    """Fold one event in (mutates and returns ``state``; repeats of a fact are harmless)."""
    if isinstance(event, cap.ParticipantJoined):
        state.joined.setdefault(event.session_id, event)
    elif isinstance(event, cap.ParticipantLeft):
        state.left.add(event.session_id)
    elif isinstance(event, cap.TrackStarted):
        state.tracks.setdefault(event.track_id, event)
    elif isinstance(event, cap.TrackEnded):
        state.ended.add(event.track_id)
    elif isinstance(event, cap.SegmentWritten):
        state.segments.setdefault((event.track_id, event.seq), event)
    elif isinstance(event, cap.CaptureClosed):
        state.closed = state.closed or event
    return state


def fold(events: Iterable[Event]) -> CaptureState:
    state = CaptureState()
    for event in events:
        evolve(state, event)
    return state


def decide_close(
    state: CaptureState, *, recording_id: str, tenant_id: str, now_ns: int
) -> list[Event]:
    """After every live session of the recording has ended: the events that finish the capture.

    Tracks and participants still open in the history belonged to a process that died; they are
    ended here (same deterministic ids as a live end would use, so a late duplicate is dropped).
    Then ``capture.closed`` with the totals. Nothing if it is already closed.
    """
    if state.closed is not None:
        return []
    out: list[Event] = []
    for track_id, started in state.tracks.items():
        if track_id in state.ended:
            continue
        segs = [s for (t, _), s in state.segments.items() if t == track_id]
        out.append(
            cap.TrackEnded(
                event_id=track_ended_id(recording_id, track_id),
                recording_id=recording_id,
                tenant_id=tenant_id,
                occurred_at=now(),
                participant_id=started.participant_id,
                track_id=track_id,
                segments=len(segs),
                frames=sum(s.frames for s in segs),
            )
        )
    for session_id, joined in state.joined.items():
        if session_id in state.left:
            continue
        out.append(
            cap.ParticipantLeft(
                event_id=left_id(recording_id, session_id),
                recording_id=recording_id,
                tenant_id=tenant_id,
                occurred_at=now(),
                participant_id=joined.participant_id,
                session_id=session_id,
                reason="proxy restarted",
                left_at_ns=now_ns,
            )
        )
    out.append(
        cap.CaptureClosed(
            event_id=closed_id(recording_id),
            recording_id=recording_id,
            tenant_id=tenant_id,
            occurred_at=now(),
            segments=len(state.segments),
            tracks=len(state.tracks),
        )
    )
    return out
