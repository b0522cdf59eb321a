"""Pure planning: which file each participant gets, which streams it holds, and where every
captured frame lands on the file's timeline.

Timeline rule: one file per participant, timestamps in milliseconds from the participant's
earliest captured frame (wall clock). A track starts at its first frame's wall-clock offset and
advances with its RTP clock, so audio and video stay aligned and a reconnect's gap stays a gap.
Within one output stream timestamps strictly increase: a track never starts before the previous
track of that stream ended, and equal timestamps are nudged forward by 1 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from shared.capture_format import Frame
from shared.ids import is_safe_name

from .errors import PlanError
from .state import RecordingCapture, Segment, Track

UNITS_PER_S = 1000  # the output time base is 1/1000 s (Matroska's default timestamp scale)
NS_PER_UNIT = 1_000_000_000 // UNITS_PER_S


@dataclass(frozen=True)
class CodecInfo:
    av_name: str  # PyAV/FFmpeg codec name for the output stream
    kind: str
    webm: bool  # allowed in WebM (else the file is Matroska)
    default_frame_ms: int


CODECS: dict[str, CodecInfo] = {
    "video/vp8": CodecInfo("vp8", "video", webm=True, default_frame_ms=33),
    "video/h264": CodecInfo("h264", "video", webm=False, default_frame_ms=33),
    "audio/opus": CodecInfo("opus", "audio", webm=True, default_frame_ms=20),
}


def codec_info(mime: str) -> CodecInfo | None:
    return CODECS.get(mime.lower())


@dataclass(frozen=True)
class TrackPlan:
    track_id: str
    session_id: str
    codec: str  # normalised MIME type, e.g. "video/vp8"
    clock_rate: int
    channels: int
    first_rtp_ts: int
    start_ms: int  # where the track's first frame lands in the file
    end_ms: int  # where its last frame lands
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class StreamPlan:
    kind: str
    codec: str
    tracks: tuple[TrackPlan, ...]

    @property
    def info(self) -> CodecInfo:
        info = codec_info(self.codec)
        assert info is not None
        return info


@dataclass(frozen=True)
class FilePlan:
    participant_id: str
    name: str  # "<participant_id>.webm" or ".mkv"
    container: str  # FFmpeg format name: "webm" or "matroska"
    content_type: str
    t0_ns: int  # wall clock of the file's time zero
    streams: tuple[StreamPlan, ...]

    @property
    def codecs(self) -> list[str]:
        return [s.codec for s in self.streams]

    @property
    def segments(self) -> list[Segment]:
        return [seg for s in self.streams for t in s.tracks for seg in t.segments]


def rtp_to_ms(track: TrackPlan, rtp_ts: int) -> int:
    """The file timestamp (ms) of a frame of ``track`` with RTP timestamp ``rtp_ts``."""
    delta = rtp_ts - track.first_rtp_ts
    return track.start_ms + (delta * UNITS_PER_S + track.clock_rate // 2) // track.clock_rate


def _ns_to_ms(ns: int) -> int:
    return (ns + NS_PER_UNIT // 2) // NS_PER_UNIT


def _recorded(state: RecordingCapture, track: Track) -> list[Segment]:
    return [s for s in state.segments_of(track.track_id) if s.frames > 0]


def plan_files(state: RecordingCapture) -> list[FilePlan]:
    """One ``FilePlan`` per participant that has captured media, in participant-id order.

    Raises ``PlanError`` (a quarantine reason) for what can never be remuxed: a codec the
    transcoder cannot pass through, or a participant id unfit for a file name.
    """
    plans: list[FilePlan] = []
    participant_ids = sorted({t.participant_id for t in state.tracks.values()})
    for pid in participant_ids:
        tracks = [(t, segs) for t in state.tracks_of(pid) if (segs := _recorded(state, t))]
        if not tracks:
            continue
        if not is_safe_name(pid):
            raise PlanError(f"participant id {pid!r} cannot be used as a file name")
        for t, _ in tracks:
            if t.clock_rate <= 0:
                raise PlanError(f"track {t.track_id} has no clock rate")
            info = codec_info(t.codec)
            if info is None or info.kind != t.kind:
                raise PlanError(f"track {t.track_id} has codec {t.codec}, which cannot be remuxed")
        t0 = min(t.first_frame_wallclock_ns for t, _ in tracks)
        streams: list[StreamPlan] = []
        keys = sorted({(t.kind, t.codec.lower()) for t, _ in tracks}, key=_stream_order)
        for kind, codec in keys:
            members = [(t, s) for t, s in tracks if (t.kind, t.codec.lower()) == (kind, codec)]
            streams.append(StreamPlan(kind, codec, _plan_tracks(members, t0, codec)))
        webm = all(s.info.webm for s in streams)
        has_video = any(s.kind == "video" for s in streams)
        media = "video" if has_video else "audio"
        plans.append(
            FilePlan(
                participant_id=pid,
                name=f"{pid}.webm" if webm else f"{pid}.mkv",
                container="webm" if webm else "matroska",
                content_type=f"{media}/webm" if webm else f"{media}/x-matroska",
                t0_ns=t0,
                streams=tuple(streams),
            )
        )
    return plans


def _stream_order(key: tuple[str, str]) -> tuple[int, str]:
    kind, codec = key
    return (0 if kind == "video" else 1, codec)


def _plan_tracks(
    members: list[tuple[Track, list[Segment]]], t0_ns: int, codec: str
) -> tuple[TrackPlan, ...]:
    info = codec_info(codec)
    assert info is not None
    out: list[TrackPlan] = []
    prev_end = -1
    for track, segs in members:  # already in wall-clock order of first frame
        first_rtp = min(s.first_rtp_ts for s in segs)
        last_rtp = max(s.last_rtp_ts for s in segs)
        start = _ns_to_ms(track.first_frame_wallclock_ns - t0_ns)
        if out and start <= prev_end:
            # Overlapping sessions (a reconnect before the old session timed out): play the new
            # one after the old one instead of interleaving two cameras' frames.
            start = prev_end + info.default_frame_ms
        length = ((last_rtp - first_rtp) * UNITS_PER_S + track.clock_rate // 2) // track.clock_rate
        plan = TrackPlan(
            track_id=track.track_id,
            session_id=track.session_id,
            codec=codec,
            clock_rate=track.clock_rate,
            channels=track.channels,
            first_rtp_ts=first_rtp,
            start_ms=start,
            end_ms=start + length,
            segments=tuple(segs),
        )
        out.append(plan)
        prev_end = plan.end_ms
    return tuple(out)


# -- frames on the timeline -----------------------------------------------------------------


@dataclass(frozen=True)
class TimedFrame:
    pts_ms: int
    duration_ms: int
    keyframe: bool
    data: bytes
    stream_index: int = 0


def vp8_is_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame."""
    return bool(data) and not data[0] & 1


def vp8_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header (RFC 6386 9.1), or None if not a key frame.

    Bytes 3..5 are the start code 9d 01 2a; then 16-bit little-endian width and height, whose
    top two bits are the scaling mode.
    """
    if len(data) < 10 or not vp8_is_keyframe(data) or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


_SILK_MS = (10.0, 20.0, 40.0, 60.0)
_HYBRID_MS = (10.0, 20.0)
_CELT_MS = (2.5, 5.0, 10.0, 20.0)


def opus_duration_ms(data: bytes) -> float | None:
    """An Opus packet's duration from its TOC byte (RFC 6716 3.1), or None if malformed."""
    if not data:
        return None
    config = data[0] >> 3
    if config < 12:
        frame = _SILK_MS[config % 4]
    elif config < 16:
        frame = _HYBRID_MS[config % 2]
    else:
        frame = _CELT_MS[config % 4]
    code = data[0] & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        if len(data) < 2:
            return None
        count = data[1] & 0x3F
        if count == 0:
            return None
    return frame * count


def is_keyframe(codec: str, frame: Frame) -> bool:
    if codec == "video/vp8":
        return vp8_is_keyframe(frame.data)
    return frame.keyframe


def _frame_duration(codec: str, data: bytes, gap_ms: int | None, fallback: int) -> int:
    if codec == "audio/opus":
        ms = opus_duration_ms(data)
        if ms is not None:
            return max(1, round(ms))
    if gap_ms is not None and gap_ms > 0:
        return gap_ms
    return fallback


def timed_frames(
    stream: StreamPlan,
    frames_of: Callable[[TrackPlan], Iterable[Frame]],
    stream_index: int = 0,
) -> Iterator[TimedFrame]:
    """Every frame of ``stream``'s tracks with its file timestamp and duration, in order.

    Video starts at a key frame in every track (anything before it cannot be decoded).
    Timestamps strictly increase across the whole stream.
    """
    info = stream.info
    last_pts = -1
    for track in stream.tracks:
        seen_key = stream.kind != "video"
        pending: tuple[int, bool, bytes] | None = None
        last_gap: int | None = None
        for frame in frames_of(track):
            key = is_keyframe(stream.codec, frame)
            if not seen_key:
                if not key:
                    continue
                seen_key = True
            pts = max(rtp_to_ms(track, frame.rtp_ts), last_pts + 1)
            if pending is not None:
                p_pts, p_key, p_data = pending
                last_gap = pts - p_pts
                dur = _frame_duration(stream.codec, p_data, last_gap, info.default_frame_ms)
                yield TimedFrame(p_pts, dur, p_key, p_data, stream_index)
            pending = (pts, key, frame.data)
            last_pts = pts
        if pending is not None:
            p_pts, p_key, p_data = pending
            dur = _frame_duration(stream.codec, p_data, last_gap, info.default_frame_ms)
            yield TimedFrame(p_pts, dur, p_key, p_data, stream_index)
