"""PyAV I/O: stream a participant's captured frames into one file. WebM/Matroska re-encode
nothing; mp4 passes H.264 through and re-encodes the rest (VP8 to H.264, Opus to AAC). Memory
stays flat: frames are read one at a time from the segment files and merged by timestamp across
the file's streams. When every stream is re-encoded, each encoder runs in its own thread."""

from __future__ import annotations

import heapq
import io
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from shared.capture_format import Frame

from .bitstream import vp8_dimensions
from .errors import SegmentInvalid
from .media import (
    RATE,
    SAMPLES_PER_MS,
    AlignedPcm,
    OutPacket,
    add_h264_encoder,
    decoded_audio,
    decoded_video,
    encoded,
    quiet_decoder,
)
from .plan import (
    SEGMENT_START,
    UNITS_PER_S,
    FilePlan,
    StreamPlan,
    TrackPlan,
    timed_frames,
)
from .prefetch import prefetched
from .sealing import RecordingFiles

TIME_BASE = Fraction(1, UNITS_PER_S)
OPUS_RATE = 48_000
# No random segment UID, no muxer version string: the same capture gives the same bytes.
CONTAINER_OPTIONS = {"fflags": "+bitexact"}

Packets = Generator[OutPacket, None, None]


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


def mux_in_order(
    out: Any, sources: Sequence[Iterator[OutPacket]], throttle: Throttle
) -> RemuxResult:
    """Mux the sources' packets into ``out`` in presentation order (each source is ordered)."""
    end_ms = 0
    count = 0
    for op in heapq.merge(*sources):
        end_ms = max(end_ms, op.end_ms)
        out.mux(op.packet)
        count += 1
        if throttle.rate:
            throttle.spent(op.size)
    return RemuxResult(duration_s=end_ms / UNITS_PER_S, packets=count)


def track_frames(files: RecordingFiles, track: TrackPlan) -> Generator[Frame | None, None, None]:
    """The track's frames from its segment files, in order, one at a time, verified as they are
    decrypted; ``SEGMENT_START`` (None) before each segment's first frame."""
    for seg in track.segments:
        header, frames = files.read(seg.path)
        if header.track_id != track.track_id:
            frames.close()  # type: ignore[attr-defined]
            raise SegmentInvalid(f"capture segment {seg.path} belongs to another track")
        yield SEGMENT_START
        yield from frames


def _first_keyframe(files: RecordingFiles, stream: StreamPlan) -> bytes | None:
    for track in stream.tracks:
        frames = track_frames(files, track)
        try:
            for frame in frames:
                if frame is not None and (frame.keyframe or vp8_dimensions(frame.data)):
                    return frame.data
        finally:
            frames.close()
    return None


def video_size(files: RecordingFiles, stream: StreamPlan) -> tuple[int, int]:
    """Width and height of the stream's first key frame (Matroska needs them up front)."""
    data = _first_keyframe(files, stream)
    if data is None:
        raise SegmentInvalid(f"the {stream.codec} stream has no key frame to start from")
    codec = stream.tracks[0].codec if stream.tracks else stream.codec
    if codec == "video/vp8":
        size = vp8_dimensions(data)
        if size:
            return size
    decoder: Any = quiet_decoder(codec)
    try:
        for packet in (av.Packet(data), None):
            for frame in decoder.decode(packet):
                if isinstance(frame, av.VideoFrame):
                    return frame.width, frame.height
    except av.FFmpegError as exc:
        raise SegmentInvalid(f"the first {stream.codec} key frame does not decode: {exc}") from None
    raise SegmentInvalid(f"the first {stream.codec} key frame gave no picture size")


def _add_stream(out: Any, files: RecordingFiles, stream: StreamPlan) -> Any:
    if stream.reencode:
        return _add_encoder(out, files, stream)
    if stream.kind == "video":
        width, height = video_size(files, stream)
        st = out.add_mux_stream(stream.info.av_name, width=width, height=height)
    elif stream.codec == "audio/opus":
        # A libopus stream carries the OpusHead header WebM requires; nothing is encoded.
        channels = max((t.channels for t in stream.tracks), default=2)
        st = out.add_stream("libopus", rate=OPUS_RATE, layout="mono" if channels == 1 else "stereo")
    else:
        st = out.add_mux_stream(stream.info.av_name)
    st.time_base = TIME_BASE
    return st


H264_OPTIONS = {"preset": "veryfast", "crf": "23"}
AAC_BIT_RATE = 128_000
VIDEO_RATE_HINT = 30


def _add_encoder(out: Any, files: RecordingFiles, stream: StreamPlan) -> Any:
    if stream.output_codec == "video/h264":
        width, height = video_size(files, stream)
        st = add_h264_encoder(out, VIDEO_RATE_HINT, H264_OPTIONS)
        st.width, st.height = width - width % 2, height - height % 2
        st.pix_fmt = "yuv420p"
        st.codec_context.time_base = TIME_BASE
        st.time_base = TIME_BASE
        return st
    if stream.output_codec == "audio/aac":
        st = out.add_stream("aac", rate=RATE, layout="stereo")
        st.bit_rate = AAC_BIT_RATE
        st.time_base = Fraction(1, RATE)
        return st
    raise SegmentInvalid(f"cannot encode {stream.output_codec}")


def passed_through(files: RecordingFiles, stream: StreamPlan, st: Any, index: int) -> Packets:
    for tf in timed_frames(stream, lambda t: track_frames(files, t), index):
        packet = av.Packet(tf.data)
        packet.pts = packet.dts = pts = tf.pts_ms
        packet.duration = tf.duration_ms
        packet.time_base = TIME_BASE
        packet.is_keyframe = tf.keyframe
        packet.stream = st
        yield OutPacket(pts, index, pts + tf.duration_ms, len(tf.data), packet)


def reencoded_video(files: RecordingFiles, stream: StreamPlan, st: Any, index: int) -> Packets:
    width, height = st.width, st.height

    def pictures() -> Iterator[av.VideoFrame]:
        for pts, picture in decoded_video([stream], lambda t: track_frames(files, t)):
            if (picture.width, picture.height, picture.format.name) != (width, height, "yuv420p"):
                picture = picture.reformat(width, height, "yuv420p")
            picture.pts = pts
            picture.time_base = TIME_BASE
            picture.pict_type = 0  # let the encoder place its key frames (AV_PICTURE_TYPE_NONE)
            yield picture

    yield from encoded(st, pictures(), index)


def stream_span_ms(stream: StreamPlan) -> tuple[int, int]:
    """Where the stream's first track starts and its last one ends (plus one frame)."""
    start = min(t.start_ms for t in stream.tracks)
    end = max(t.end_ms for t in stream.tracks) + stream.info.default_frame_ms
    return start, end


def reencoded_audio(
    files: RecordingFiles, stream: StreamPlan, st: Any, index: int, window: int = 960
) -> Packets:
    """Decoded audio placed on the timeline (silence in gaps), in windows on the 20 ms packet
    grid, so a continuous track is never copied sample by sample. PyAV reframes them to the
    encoder's frame size in C (its resampler graph, as the ffmpeg CLI does): no fifo here."""
    start_ms, end_ms = stream_span_ms(stream)
    pcm = AlignedPcm(decoded_audio([stream], lambda t: track_frames(files, t)))

    def frames() -> Iterator[av.AudioFrame]:
        position, end = start_ms * SAMPLES_PER_MS, end_ms * SAMPLES_PER_MS
        while position < end:
            n = min(window, end - position)
            yield pcm.read_frame(position, n)
            position += n

    yield from encoded(st, frames(), index)


def _packets(files: RecordingFiles, stream: StreamPlan, st: Any, index: int) -> Packets:
    if not stream.reencode:
        return passed_through(files, stream, st, index)
    if stream.kind == "video":
        return reencoded_video(files, stream, st, index)
    return reencoded_audio(files, stream, st, index)


def _threaded(out: Any, plan: FilePlan, sources: list[Packets]) -> list[Packets]:
    """Every stream re-encoded: each encoder in its own thread, as the ffmpeg CLI's encoders
    run beside its main loop. The header is written first (it opens the encoders), so no codec
    context is ever touched by two threads; a file with a passed-through stream keeps one
    thread, because PyAV writes its header only once that stream's first packet is seen."""
    if len(sources) < 2 or not all(s.reencode for s in plan.streams):
        return sources
    out.start_encoding()
    return [prefetched(src) for src in sources]


def remux(
    plan: FilePlan,
    files: RecordingFiles,
    out_file: Path | io.RawIOBase,
    *,
    max_bytes_per_s: int = 0,
) -> RemuxResult:
    """Write ``plan``'s file to ``out_file`` (a path, or a seekable file such as
    ``RecordingFiles.create``'s, which PyAV does not close); raises ``SegmentInvalid`` on
    unreadable or tampered input."""
    throttle = Throttle(max_bytes_per_s)
    target = str(out_file) if isinstance(out_file, Path) else out_file
    with av.open(target, "w", format=plan.container, container_options=CONTAINER_OPTIONS) as out:
        streams = [_add_stream(out, files, s) for s in plan.streams]
        pairs = enumerate(zip(plan.streams, streams, strict=True))
        sources = _threaded(out, plan, [_packets(files, s, st, i) for i, (s, st) in pairs])
        try:
            return mux_in_order(out, sources, throttle)
        finally:
            for src in sources:
                src.close()  # stops the threads before the file closes
