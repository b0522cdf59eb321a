"""What one recording's CAPTURES history says, folded with a pure ``evolve``; and whether it is
complete enough to transcode.

Repeats of a fact are harmless (the first copy wins), so a redelivered or re-published event never
changes the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from shared.events import captures as cap
from shared.events.base import Event


@dataclass(frozen=True)
class Session:
    session_id: str
    joined_at_ns: int
    left_at_ns: int | None = None
    leave_reason: str = ""
    join_seen: bool = True  # False while only the leave is known (its time stands in)


@dataclass(frozen=True)
class Participant:
    participant_id: str
    display_name: str = ""
    sessions: tuple[Session, ...] = ()


@dataclass(frozen=True)
class Segment:
    track_id: str
    seq: int
    path: str  # relative to the recording's backup folder
    sha256: str
    size: int
    frames: int
    first_rtp_ts: int
    last_rtp_ts: int
    first_wallclock_ns: int
    last_wallclock_ns: int
    # RTCP sender reports of the segment's time: (rtp_ts on the capture timeline, NTP Unix ns)
    sender_reports: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Track:
    track_id: str
    participant_id: str
    session_id: str
    kind: str  # "audio" | "video"
    codec: str  # MIME type, e.g. "video/VP8"
    clock_rate: int
    channels: int
    first_frame_wallclock_ns: int


@dataclass(frozen=True)
class TrackEnd:
    segments: int  # as the proxy counted them (may include an abandoned empty one)
    frames: int
    packets_lost: int


@dataclass(frozen=True)
class RecordingCapture:
    recording_id: str = ""
    tenant_id: str = ""
    participants: Mapping[str, Participant] = field(default_factory=dict)
    tracks: Mapping[str, Track] = field(default_factory=dict)
    # (track_id, seq) -> segment; insertion order is irrelevant, use ``segments_of``.
    segments: Mapping[tuple[str, int], Segment] = field(default_factory=dict)
    ended: Mapping[str, TrackEnd] = field(default_factory=dict)  # by track id
    closed: cap.CaptureClosed | None = None

    def segments_of(self, track_id: str) -> list[Segment]:
        """The track's segments ordered by seq."""
        return sorted(
            (s for (t, _), s in self.segments.items() if t == track_id), key=lambda s: s.seq
        )

    def tracks_of(self, participant_id: str) -> list[Track]:
        """The participant's tracks in wall-clock order of their first frame."""
        return sorted(
            (t for t in self.tracks.values() if t.participant_id == participant_id),
            key=lambda t: (t.first_frame_wallclock_ns, t.track_id),
        )


K = TypeVar("K")
V = TypeVar("V")


def _with(mapping: Mapping[K, V], key: K, value: V) -> dict[K, V]:
    out = dict(mapping)
    out[key] = value
    return out


def _sorted_sessions(sessions: Iterable[Session]) -> tuple[Session, ...]:
    return tuple(sorted(sessions, key=lambda s: (s.joined_at_ns, s.session_id)))


def evolve(state: RecordingCapture, event: Event) -> RecordingCapture:
    """Fold one event into a new state (``state`` is never changed)."""
    if not state.recording_id:
        state = replace(state, recording_id=event.recording_id, tenant_id=event.tenant_id)
    if isinstance(event, cap.ParticipantJoined):
        p = state.participants.get(event.participant_id) or Participant(
            event.participant_id, event.display_name
        )
        known = next((s for s in p.sessions if s.session_id == event.session_id), None)
        if known is not None and known.join_seen:
            return state
        joined = (
            replace(known, joined_at_ns=event.joined_at_ns, join_seen=True)
            if known is not None
            else Session(event.session_id, event.joined_at_ns)
        )
        others = [s for s in p.sessions if s.session_id != event.session_id]
        p = replace(
            p,
            display_name=p.display_name or event.display_name,
            sessions=_sorted_sessions((*others, joined)),
        )
        return replace(state, participants=_with(state.participants, p.participant_id, p))
    if isinstance(event, cap.ParticipantLeft):
        # A leave whose join was never recorded still says the session existed.
        person = state.participants.get(event.participant_id) or Participant(event.participant_id)
        sessions = person.sessions
        if not any(s.session_id == event.session_id for s in sessions):
            sessions = _sorted_sessions(
                (*sessions, Session(event.session_id, event.left_at_ns, join_seen=False))
            )
        sessions = tuple(
            replace(s, left_at_ns=event.left_at_ns, leave_reason=event.reason)
            if s.session_id == event.session_id and s.left_at_ns is None
            else s
            for s in sessions
        )
        person = replace(person, sessions=sessions)
        return replace(state, participants=_with(state.participants, person.participant_id, person))
    if isinstance(event, cap.TrackStarted):
        if event.track_id in state.tracks:
            return state
        track = Track(
            track_id=event.track_id,
            participant_id=event.participant_id,
            session_id=event.session_id,
            kind=event.kind,
            codec=event.codec,
            clock_rate=event.clock_rate,
            channels=event.channels,
            first_frame_wallclock_ns=event.first_frame_wallclock_ns,
        )
        return replace(state, tracks=_with(state.tracks, track.track_id, track))
    if isinstance(event, cap.TrackEnded):
        if event.track_id in state.ended:
            return state
        end = TrackEnd(event.segments, event.frames, event.packets_lost)
        return replace(state, ended=_with(state.ended, event.track_id, end))
    if isinstance(event, cap.SegmentWritten):
        key = (event.track_id, event.seq)
        if key in state.segments:
            return state
        seg = Segment(
            track_id=event.track_id,
            seq=event.seq,
            path=event.path,
            sha256=event.sha256,
            size=event.size,
            frames=event.frames,
            first_rtp_ts=event.first_rtp_ts,
            last_rtp_ts=event.last_rtp_ts,
            first_wallclock_ns=event.first_wallclock_ns,
            last_wallclock_ns=event.last_wallclock_ns,
            sender_reports=event.sender_reports,
        )
        return replace(state, segments=_with(state.segments, key, seg))
    if isinstance(event, cap.CaptureClosed):
        return state if state.closed is not None else replace(state, closed=event)
    return state


def fold(events: Iterable[Event], state: RecordingCapture | None = None) -> RecordingCapture:
    out = state or RecordingCapture()
    for event in events:
        out = evolve(out, event)
    return out


def missing_parts(state: RecordingCapture) -> list[str]:
    """Why the capture is not (yet) complete; empty when every announced segment is known.

    Events can still be arriving (the proxy publishes per track, in parallel), so a non-empty
    answer means "try again shortly", and only after a few tries "quarantine".
    """
    if state.closed is None:
        return ["the capture is not closed yet"]
    problems: list[str] = []
    have = len(state.segments)
    if have < state.closed.segments:
        problems.append(f"{have} of {state.closed.segments} capture segments are recorded")
    if len(state.tracks) < state.closed.tracks:
        problems.append(f"{len(state.tracks)} of {state.closed.tracks} tracks are recorded")
    unknown = sorted({t for t, _ in state.segments if t not in state.tracks})
    if unknown:
        problems.append(f"segments of track {unknown[0]} arrived without its track_started")
    for track_id in sorted(state.tracks):
        seqs = [s.seq for s in state.segments_of(track_id)]
        holes = sorted(set(range(max(seqs) + 1)) - set(seqs)) if seqs else []
        if holes:
            problems.append(f"track {track_id} is missing segment {holes[0]}")
    return problems
