"""PyAV I/O: stream a participant's captured frames into one WebM/Matroska file, re-encoding
nothing. Memory stays flat: frames are read one at a time from the segment files and merged by
timestamp across the file's streams."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from shared.backup import UnsafePath, inside
from shared.capture_format import Frame, SegmentFormatError, read_segment

from .errors import SegmentInvalid
from .plan import UNITS_PER_S, FilePlan, StreamPlan, TrackPlan, timed_frames, vp8_dimensions

TIME_BASE = Fraction(1, UNITS_PER_S)
OPUS_RATE = 48_000
# No random segment UID, no muxer version string: the same capture gives the same bytes.
CONTAINER_OPTIONS = {"fflags": "+bitexact"}


@dataclass(frozen=True)
class RemuxResult:
    duration_s: float
    packets: int


class Throttle:
    """Sleeps just enough to keep the write rate under ``bytes_per_s`` (0: never sleeps)."""

    def __init__(
        self,
        bytes_per_s: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = bytes_per_s
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._total = 0

    def spent(self, n: int) -> None:
        if self.rate <= 0:
            return
        self._total += n
        ahead = self._total / self.rate - (self._clock() - self._start)
        if ahead > 0.02:
            self._sleep(ahead)


def segment_path(rec_dir: Path, relative: str) -> Path:
    try:
        return inside(rec_dir, relative)
    except UnsafePath:
        raise SegmentInvalid(
            f"capture segment path {relative!r} leaves the recording folder"
        ) from None


def track_frames(rec_dir: Path, track: TrackPlan) -> Generator[Frame, None, None]:
    """The track's frames from its segment files, in order, one at a time."""
    for seg in track.segments:
        path = segment_path(rec_dir, seg.path)
        try:
            header, frames = read_segment(path)
        except FileNotFoundError:
            raise SegmentInvalid(f"capture segment {seg.path} is missing") from None
        except (SegmentFormatError, ValueError) as exc:
            raise SegmentInvalid(f"capture segment {seg.path} is not readable: {exc}") from None
        if header.track_id != track.track_id:
            frames.close()  # type: ignore[attr-defined]
            raise SegmentInvalid(f"capture segment {seg.path} belongs to another track")
        yield from frames


def _first_keyframe(rec_dir: Path, stream: StreamPlan) -> bytes | None:
    for track in stream.tracks:
        frames = track_frames(rec_dir, track)
        try:
            for frame in frames:
                if frame.keyframe or vp8_dimensions(frame.data):
                    return frame.data
        finally:
            frames.close()
    return None


def video_size(rec_dir: Path, stream: StreamPlan) -> tuple[int, int]:
    """Width and height of the stream's first key frame (Matroska needs them up front)."""
    data = _first_keyframe(rec_dir, stream)
    if data is None:
        raise SegmentInvalid(f"the {stream.codec} stream has no key frame to start from")
    if stream.codec == "video/vp8":
        size = vp8_dimensions(data)
        if size:
            return size
    decoder: Any = av.CodecContext.create(stream.info.av_name, "r")
    try:
        for packet in (av.Packet(data), None):
            for frame in decoder.decode(packet):
                if isinstance(frame, av.VideoFrame):
                    return frame.width, frame.height
    except av.FFmpegError as exc:
        raise SegmentInvalid(f"the first {stream.codec} key frame does not decode: {exc}") from None
    raise SegmentInvalid(f"the first {stream.codec} key frame gave no picture size")


def _add_stream(out: Any, rec_dir: Path, stream: StreamPlan) -> Any:
    if stream.kind == "video":
        width, height = video_size(rec_dir, stream)
        st = out.add_mux_stream(stream.info.av_name, width=width, height=height)
    elif stream.codec == "audio/opus":
        # A libopus stream carries the OpusHead header WebM requires; nothing is encoded.
        channels = max((t.channels for t in stream.tracks), default=2)
        st = out.add_stream("libopus", rate=OPUS_RATE, layout="mono" if channels == 1 else "stereo")
    else:
        st = out.add_mux_stream(stream.info.av_name)
    st.time_base = TIME_BASE
    return st


def remux(
    plan: FilePlan, rec_dir: Path, out_path: Path, *, max_bytes_per_s: int = 0
) -> RemuxResult:
    """Write ``plan``'s file to ``out_path``; raises ``SegmentInvalid`` on unreadable input."""
    throttle = Throttle(max_bytes_per_s)
    end_ms = 0
    count = 0
    with av.open(
        str(out_path), "w", format=plan.container, container_options=CONTAINER_OPTIONS
    ) as out:
        streams = [_add_stream(out, rec_dir, s) for s in plan.streams]
        sources = [
            timed_frames(s, lambda t: track_frames(rec_dir, t), i)
            for i, s in enumerate(plan.streams)
        ]
        for tf in heapq.merge(*sources, key=lambda f: (f.pts_ms, f.stream_index)):
            packet = av.Packet(tf.data)
            packet.pts = tf.pts_ms
            packet.dts = tf.pts_ms
            packet.duration = tf.duration_ms
            packet.time_base = TIME_BASE
            packet.is_keyframe = tf.keyframe
            packet.stream = streams[tf.stream_index]
            out.mux(packet)
            end_ms = max(end_ms, tf.pts_ms + tf.duration_ms)
            count += 1
            throttle.spent(len(tf.data))
    return RemuxResult(duration_s=end_ms / UNITS_PER_S, packets=count)
