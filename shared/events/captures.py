"""CAPTURES stream: what the proxy recorded. Written by the proxy, read by the transcoder."""

from __future__ import annotations

from typing import Literal

from .base import Event, StreamSpec

STREAM = StreamSpec(
    name="CAPTURES",
    prefix="captures",
    owner="proxy",
    description="Per-participant, per-track capture facts: joins, tracks, sealed segments, leaves.",
)

TrackKind = Literal["audio", "video"]


class ParticipantJoined(Event, frozen=True, kw_only=True, tag="capture.participant_joined"):
    participant_id: str  # safe slug, unique within the recording; used in paths
    session_id: str  # one WHIP resource; a participant who reconnects gets a new one
    display_name: str = ""
    joined_at_ns: int  # wall clock (time.time_ns) when the offer was accepted


class TrackStarted(Event, frozen=True, kw_only=True, tag="capture.track_started"):
    participant_id: str
    session_id: str
    track_id: str  # "<participant_id>-<session>-<kind>": unique within the recording
    kind: TrackKind
    codec: str  # MIME type as negotiated: "video/VP8", "video/H264", "audio/opus"
    clock_rate: int
    channels: int = 0
    first_frame_wallclock_ns: int  # wall clock of the first captured frame: A/V alignment anchor


class SegmentWritten(Event, frozen=True, kw_only=True, tag="capture.segment_written"):
    participant_id: str
    track_id: str
    kind: TrackKind
    seq: int  # 0, 1, 2... per track
    path: str  # relative to the recording's backup folder
    sha256: str
    size: int
    frames: int
    first_rtp_ts: int
    last_rtp_ts: int
    first_wallclock_ns: int
    last_wallclock_ns: int
    keyframes: int = 0
    # RTCP sender reports received while this segment was written, for A/V alignment by the
    # sender's own clock: (rtp_ts, ntp_unix_ns) pairs, rtp_ts on this track's capture timeline
    # (like first_rtp_ts; negative if the report predates the track's first frame), ntp_unix_ns
    # the sender's NTP wall clock as Unix nanoseconds. Empty if the sender sent none.
    sender_reports: tuple[tuple[int, int], ...] = ()


class TrackEnded(Event, frozen=True, kw_only=True, tag="capture.track_ended"):
    participant_id: str
    track_id: str
    segments: int
    frames: int
    packets_lost: int = 0
    keyframe_requests: int = 0


class ParticipantLeft(Event, frozen=True, kw_only=True, tag="capture.participant_left"):
    participant_id: str
    session_id: str
    reason: str
    left_at_ns: int


class CaptureClosed(Event, frozen=True, kw_only=True, tag="capture.closed"):
    """The recording is stopped and every track it had is ended: the transcoder may begin."""

    segments: int  # total SegmentWritten events for the recording: lets readers check completeness
    tracks: int


CaptureEvent = (
    ParticipantJoined | TrackStarted | SegmentWritten | TrackEnded | ParticipantLeft | CaptureClosed
)
EVENTS: tuple[type[Event], ...] = (
    ParticipantJoined,
    TrackStarted,
    SegmentWritten,
    TrackEnded,
    ParticipantLeft,
    CaptureClosed,
)
