"""The proxy's metrics: who is publishing now, what was captured, and what was lost on the way.

``kind`` is the track's kind (audio or video); no label names a recording, a participant or a
session (those come and go without bound).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from .session import Sessions

KINDS = ("audio", "video")
LOST_REASONS = (
    "gap",  # video after lost packets, until the next key frame (it would not decode)
    "no_keyframe",  # video before the track's first key frame
    "codec_switch",  # the sender changed codecs mid-track
    "late",  # a frame from before the capture's first frame
)

PARTICIPANTS = Gauge(
    "resguardo_proxy_participants",
    "WHIP sessions open on this proxy now (one per participant publishing to a recording).",
)
TRACKS = Gauge(
    "resguardo_proxy_tracks",
    "Tracks being captured on this proxy now (started: their first frame was written).",
    ["kind"],
)
PEER_CONNECTIONS = Gauge(
    "resguardo_proxy_peer_connections",
    "WebRTC peer connections open on this proxy now (closed ones are released).",
)
SEGMENTS = Counter(
    "resguardo_proxy_segments_total",
    "Capture segments finished (written, fsynced and renamed into place) by this proxy.",
    ["kind"],
)
CAPTURED_BYTES = Counter(
    "resguardo_proxy_captured_bytes_total",
    "Bytes of the capture segments this proxy finished.",
    ["kind"],
)
FRAMES = Counter(
    "resguardo_proxy_frames_total",
    "Encoded frames written to the capture segments this proxy finished.",
    ["kind"],
)
FRAMES_LOST = Counter(
    "resguardo_proxy_frames_lost_total",
    "Frames received but not recorded, by reason: gap (video after lost packets, until the next "
    "key frame), no_keyframe (video before its first key frame), codec_switch, late.",
    ["kind", "reason"],
)
GAPS = Counter(
    "resguardo_proxy_video_gaps_total",
    "Times video packets were lost for good (not repaired in time) and frames dropped until "
    "the next key frame.",
)
PACKETS_LOST = Counter(
    "resguardo_proxy_packets_lost_total",
    "RTP packets lost before repair on the senders' media streams (RTCP's count), added when "
    "each session ends.",
    ["kind"],
)
SALVAGED_EVENTS = Counter(
    "resguardo_proxy_salvaged_events_total",
    "Capture events a starting proxy published for what a killed one left on disk (segments "
    "finished after the crash, their segment_written and track_started).",
)

for _kind in KINDS:
    for _metric in (TRACKS, SEGMENTS, CAPTURED_BYTES, FRAMES, PACKETS_LOST):
        _metric.labels(kind=_kind)
    for _reason in LOST_REASONS:
        FRAMES_LOST.labels(kind=_kind, reason=_reason)


async def refresh(sessions: Sessions) -> None:
    """Set the live gauges from the session registry (a ``before_scrape`` hook)."""
    live = list(sessions.by_id.values())
    PARTICIPANTS.set(len(live))
    PEER_CONNECTIONS.set(sessions.open_peer_connections)
    for kind in KINDS:
        TRACKS.labels(kind=kind).set(
            sum(
                1
                for s in live
                for c in s.captures.values()
                if c.ident.kind == kind and c.started and not c.closed
            )
        )
