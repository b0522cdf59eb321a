"""Pure planning: which file each participant gets, which streams it holds, and where every
captured frame lands on the file's timeline.

Timeline rule: one file per participant, timestamps in milliseconds from the participant's
earliest captured frame (wall clock). A track starts at its anchor and advances with its RTP
clock, so audio and video stay aligned and a reconnect's gap stays a gap. Where the sender sent
RTCP sender reports, the anchor and the rate come from the sender's own clock (``clocks.py``:
what delayed a track on the way does not matter, and a drifting camera clock is corrected);
otherwise from arrival times.
Within one output stream timestamps strictly increase: a track never starts before the previous
track of that stream ended, and equal timestamps are nudged forward by 1 ms.

A track's arrival anchor is the wall clock its first RTP timestamp stands for, taken from the
least delayed frame of its first seconds (a large first key frame arrives late; the frames after
it do not).
If the RTP clock jumps backwards or strays from the wall clock by more than ``REANCHOR_MS`` (a
sender restart, a bad unwrap), the track is re-anchored on the wall clock: never hours of silence.

Video is only kept from a key frame on: at each track's start, at each segment that does not begin
with one (the proxy starts every segment at a key frame, so its first one was lost), and after a
gap in RTP time that means lost frames; what follows such a loss until the next key frame could
not be decoded, so it is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from shared.capture_format import Frame
from shared.ids import is_safe_name

from .bitstream import is_keyframe, opus_duration_ms
from .clocks import Anchor, track_anchors
from .errors import PlanError
from .state import RecordingCapture, Segment, Track

UNITS_PER_S = 1000  # the output time base is 1/1000 s (Matroska's default timestamp scale)
NS_PER_UNIT = 1_000_000_000 // UNITS_PER_S
REANCHOR_MS = 5_000  # RTP time further than this from the wall clock is not believed
LOSS_MIN_MS = 100  # a video RTP gap at least this long (and 2.5 frames) means lost frames
LOSS_FRAMES = 2.5

FORMATS = ("webm", "mp4")
TRACK_CHOICES = ("av", "audio", "video")


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
class OutputOptions:
    """What the destination asked for: the container family and which tracks."""

    format: str = "webm"  # "webm" (VP8/Opus as captured; H.264 in Matroska) or "mp4" (H.264/AAC)
    tracks: str = "av"  # "av", "audio" or "video"

    def check(self) -> None:
        if self.format not in FORMATS:
            raise PlanError(f"output format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.tracks not in TRACK_CHOICES:
            raise PlanError(
                f"output tracks {self.tracks!r} is not one of {', '.join(TRACK_CHOICES)}"
            )

    def wants(self, kind: str) -> bool:
        return self.tracks == "av" or self.tracks == kind


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
    # How RTP time advances on the file's timeline: the sender's measured rate (drift
    # corrected) when it sent RTCP sender reports; 0.0 means the nominal clock rate.
    ns_per_tick: float = 0.0
    alignment: str = "arrival"  # "sender_report": placed by the sender's clock; or by arrival
    drift_ppm: float = 0.0  # how much faster than nominal the sender's RTP clock ran

    def ticks_to_ms(self, delta: int) -> int:
        """RTP ticks (from this track's clock) as file milliseconds, rounded."""
        return _ticks_ms(delta, self.ns_per_tick, self.clock_rate)


@dataclass(frozen=True)
class StreamPlan:
    kind: str
    codec: str  # the input codec (of the first track when a re-encoded stream mixes codecs)
    tracks: tuple[TrackPlan, ...]
    out_codec: str = ""  # "" or equal to ``codec``: passed through; else re-encoded to it

    @property
    def info(self) -> CodecInfo:
        info = codec_info(self.codec)
        assert info is not None
        return info

    @property
    def output_codec(self) -> str:
        return self.out_codec or self.codec

    @property
    def reencode(self) -> bool:
        return self.output_codec != self.codec or any(t.codec != self.codec for t in self.tracks)


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
        return [s.output_codec for s in self.streams]

    @property
    def segments(self) -> list[Segment]:
        return [seg for s in self.streams for t in s.tracks for seg in t.segments]


def rtp_to_ms(track: TrackPlan, rtp_ts: int) -> int:
    """The file timestamp (ms) of a frame of ``track`` with RTP timestamp ``rtp_ts``."""
    return track.start_ms + track.ticks_to_ms(rtp_ts - track.first_rtp_ts)


def _ns_to_ms(ns: int) -> int:
    return (ns + NS_PER_UNIT // 2) // NS_PER_UNIT


def _recorded(state: RecordingCapture, track: Track) -> list[Segment]:
    return [s for s in state.segments_of(track.track_id) if s.frames > 0]


def plan_files(state: RecordingCapture, options: OutputOptions | None = None) -> list[FilePlan]:
    """One ``FilePlan`` per participant that has captured media, in participant-id order.

    Raises ``PlanError`` (a quarantine reason) for what can never be remuxed: a codec the
    transcoder cannot pass through, or a participant id unfit for a file name.
    """
    options = options or OutputOptions()
    options.check()
    plans: list[FilePlan] = []
    participant_ids = sorted({t.participant_id for t in state.tracks.values()})
    for pid in participant_ids:
        tracks = [
            (t, segs)
            for t in state.tracks_of(pid)
            if options.wants(t.kind) and (segs := _recorded(state, t))
        ]
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
        anchors = track_anchors(tracks)
        t0 = min(a.wall_ns for a in anchors.values())
        ordered = sorted(tracks, key=lambda ts: (anchors[ts[0].track_id].wall_ns, ts[0].track_id))
        has_video = any(t.kind == "video" for t, _ in tracks)
        media = "video" if has_video else "audio"
        if options.format == "mp4":
            streams = _mp4_streams(ordered, anchors, t0)
            name, container, content_type = f"{pid}.mp4", "mp4", f"{media}/mp4"
        else:
            streams = _native_streams(ordered, anchors, t0)
            if all(s.info.webm for s in streams):
                name, container, content_type = f"{pid}.webm", "webm", f"{media}/webm"
            else:
                name, container, content_type = f"{pid}.mkv", "matroska", f"{media}/x-matroska"
        plans.append(
            FilePlan(
                participant_id=pid,
                name=name,
                container=container,
                content_type=content_type,
                t0_ns=t0,
                streams=tuple(streams),
            )
        )
    return plans


_Members = list[tuple[Track, list[Segment]]]


def _native_streams(tracks: _Members, anchors: dict[str, Anchor], t0: int) -> list[StreamPlan]:
    """Captured codecs as they are: one stream per (kind, codec)."""
    streams: list[StreamPlan] = []
    keys = sorted({(t.kind, t.codec.lower()) for t, _ in tracks}, key=_stream_order)
    for kind, codec in keys:
        members = [(t, s) for t, s in tracks if (t.kind, t.codec.lower()) == (kind, codec)]
        streams.append(StreamPlan(kind, codec, _plan_tracks(members, anchors, t0)))
    return streams


def _mp4_streams(tracks: _Members, anchors: dict[str, Anchor], t0: int) -> list[StreamPlan]:
    """At most one H.264 and one AAC stream: H.264 passes through when every video track is
    H.264; anything else is re-encoded."""
    streams: list[StreamPlan] = []
    video = [(t, s) for t, s in tracks if t.kind == "video"]
    audio = [(t, s) for t, s in tracks if t.kind == "audio"]
    if video:
        first = video[0][0].codec.lower()
        planned = _plan_tracks(video, anchors, t0)
        streams.append(StreamPlan("video", first, planned, out_codec="video/h264"))
    if audio:
        first = audio[0][0].codec.lower()
        planned = _plan_tracks(audio, anchors, t0)
        streams.append(StreamPlan("audio", first, planned, out_codec="audio/aac"))
    return streams


def _stream_order(key: tuple[str, str]) -> tuple[int, str]:
    kind, codec = key
    return (0 if kind == "video" else 1, codec)


def _plan_tracks(
    members: _Members, anchors: dict[str, Anchor], t0_ns: int
) -> tuple[TrackPlan, ...]:
    out: list[TrackPlan] = []
    prev_end = -1
    for track, segs in members:  # already in wall-clock order of their anchors
        info = codec_info(track.codec)
        assert info is not None
        first_rtp = min(s.first_rtp_ts for s in segs)
        last_rtp = max(s.last_rtp_ts for s in segs)
        anchor = anchors[track.track_id]
        start = _ns_to_ms(anchor.wall_ns - t0_ns)
        if out and start <= prev_end:
            # Overlapping sessions (a reconnect before the old session timed out): play the new
            # one after the old one instead of interleaving two cameras' frames.
            start = prev_end + info.default_frame_ms
        length = _ticks_ms(last_rtp - first_rtp, anchor.ns_per_tick, track.clock_rate)
        wall = _ns_to_ms(
            max(s.last_wallclock_ns for s in segs) - min(s.first_wallclock_ns for s in segs)
        )
        if abs(length - wall) > REANCHOR_MS:
            length = wall  # the RTP clock jumped: the frames will be placed by wall clock
        plan = TrackPlan(
            track_id=track.track_id,
            session_id=track.session_id,
            codec=track.codec.lower(),
            clock_rate=track.clock_rate,
            channels=track.channels,
            first_rtp_ts=first_rtp,
            start_ms=start,
            end_ms=start + length,
            segments=tuple(segs),
            ns_per_tick=anchor.ns_per_tick,
            alignment=anchor.source,
            drift_ppm=anchor.drift_ppm,
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
    track_index: int = 0  # which of the stream's tracks (a new bitstream: a new decoder)


def _frame_duration(codec: str, data: bytes, gap_ms: int | None, fallback: int) -> int:
    if codec == "audio/opus":
        ms = opus_duration_ms(data)
        if ms is not None:
            return max(1, round(ms))
    if gap_ms is not None and gap_ms > 0:
        return gap_ms
    return fallback


# What ``frames_of`` may yield between frames: "a new segment file starts here".
SEGMENT_START = None


class _Clock:
    """A track's RTP clock placed on the file's timeline, re-anchored on the wall clock when the
    RTP timestamps cannot be believed."""

    def __init__(self, track: TrackPlan) -> None:
        self.track = track
        self.rtp0 = track.first_rtp_ts
        self.ms0 = track.start_ms
        self.wall0: int | None = None  # wall clock of the track's first frame
        self.prev_rtp: int | None = None

    def place(self, frame: Frame, last_pts: int) -> int:
        t = self.track
        if self.wall0 is None:
            self.wall0 = frame.wallclock_ns
        wall_ms = t.start_ms + _ns_to_ms(frame.wallclock_ns - self.wall0)
        rtp_ms = self.ms0 + t.ticks_to_ms(frame.rtp_ts - self.rtp0)
        backwards = self.prev_rtp is not None and frame.rtp_ts < self.prev_rtp
        if backwards or abs(rtp_ms - wall_ms) > REANCHOR_MS:
            self.rtp0, self.ms0 = frame.rtp_ts, max(wall_ms, last_pts + 1)
            rtp_ms = self.ms0
        self.prev_rtp = frame.rtp_ts
        return max(rtp_ms, last_pts + 1)


def _rtp_ms(delta: int, clock_rate: int) -> int:
    return (delta * UNITS_PER_S + clock_rate // 2) // clock_rate


def _ticks_ms(delta: int, ns_per_tick: float, clock_rate: int) -> int:
    """RTP ticks as milliseconds: at the sender's measured rate, or (0.0) the nominal one."""
    if ns_per_tick > 0:
        return round(delta * ns_per_tick / NS_PER_UNIT)
    return _rtp_ms(delta, clock_rate)


class _LossWatch:
    """Says when a video RTP gap is longer than the track's frame cadence allows."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.recent: deque[int] = deque(maxlen=15)
        self.prev: int | None = None

    def lost_before(self, rtp_ts: int) -> bool:
        prev, self.prev = self.prev, rtp_ts
        if prev is None or rtp_ts <= prev:
            return False
        delta = rtp_ts - prev
        lost = False
        if len(self.recent) >= 3:
            nominal = sorted(self.recent)[len(self.recent) // 2]
            floor = LOSS_MIN_MS * self.clock_rate // UNITS_PER_S
            lost = delta >= max(LOSS_FRAMES * nominal, floor)
        if not lost:
            self.recent.append(delta)
        return lost


def timed_frames(
    stream: StreamPlan,
    frames_of: Callable[[TrackPlan], Iterable[Frame | None]],
    stream_index: int = 0,
) -> Iterator[TimedFrame]:
    """Every frame of ``stream``'s tracks with its file timestamp and duration, in order.

    ``frames_of`` may yield ``SEGMENT_START`` (None) where a segment file begins. Video is kept
    only from a key frame on (see the module's docstring). Timestamps strictly increase across
    the whole stream.
    """
    last_pts = -1
    video = stream.kind == "video"
    for index, track in enumerate(stream.tracks):
        codec = track.codec
        default_ms = (codec_info(codec) or stream.info).default_frame_ms
        need_key = video
        clock = _Clock(track)
        loss = _LossWatch(track.clock_rate)
        pending: tuple[int, bool, bytes] | None = None
        last_gap: int | None = None
        for frame in frames_of(track):
            if frame is None:
                need_key = need_key or video
                continue
            key = is_keyframe(codec, frame)
            if video and loss.lost_before(frame.rtp_ts):
                need_key = True
            if need_key:
                if not key:
                    continue
                need_key = False
            pts = clock.place(frame, last_pts)
            if pending is not None:
                p_pts, p_key, p_data = pending
                last_gap = pts - p_pts
                dur = _frame_duration(codec, p_data, last_gap, default_ms)
                yield TimedFrame(p_pts, dur, p_key, p_data, stream_index, index)
            pending = (pts, key, frame.data)
            last_pts = pts
        if pending is not None:
            p_pts, p_key, p_data = pending
            dur = _frame_duration(codec, p_data, last_gap, default_ms)
            yield TimedFrame(p_pts, dur, p_key, p_data, stream_index, index)
