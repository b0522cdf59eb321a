"""Decoding and encoding, frame by frame: what the re-encoded outputs (mp4, the composite) are
made of. Nothing here holds more than a few frames: every function is a generator or a small
buffer that forgets what it has handed on.

Audio is carried as planar float stereo PCM at 48 kHz (what the Opus decoder gives and the AAC
encoder takes) and placed on a sample timeline by
``AlignedPcm``, which fills gaps with silence and trims overlaps, so an encoder always gets a
continuous signal whose every sample sits where the wall clock says it belongs.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import av

from shared.capture_format import Frame

from .plan import UNITS_PER_S, StreamPlan, TrackPlan, timed_frames

RATE = 48_000
SAMPLES_PER_MS = RATE // UNITS_PER_S
BYTES_PER_SAMPLE = 4  # 32-bit float, per channel (planar)
# Audio arriving within this many samples of where the previous chunk ended is played on from
# there (RTP rounding and jitter); further away, the gap is silence or the overlap is cut.
CONTINUITY_SAMPLES = 40 * SAMPLES_PER_MS
MS = Fraction(1, UNITS_PER_S)

DECODERS = {"video/vp8": "vp8", "video/h264": "h264", "audio/opus": "opus"}

FramesOf = Callable[[TrackPlan], Iterable[Frame | None]]


def quiet_decoder(codec: str, channels: int = 0) -> Any:
    cc: Any = av.CodecContext.create(DECODERS[codec], "r")
    if codec.startswith("video/"):
        cc.thread_type = "AUTO"  # frame threads: pictures come out a few packets later
    if codec == "audio/opus":
        cc.sample_rate = RATE
        cc.layout = "mono" if channels == 1 else "stereo"
    return cc


def decoded_video(
    streams: Iterable[StreamPlan], frames_of: FramesOf, offset_ms: int = 0
) -> Iterator[tuple[int, av.VideoFrame]]:
    """(timeline ms, picture) for every decodable frame of the video ``streams``, in time order.

    A frame the decoder refuses is dropped with everything after it until the next key frame:
    nothing undecodable reaches an output.
    """
    sources = [_decode_video_stream(s, frames_of, offset_ms) for s in streams]
    yield from heapq.merge(*sources, key=lambda item: item[0])


def _decode_video_stream(
    stream: StreamPlan, frames_of: FramesOf, offset_ms: int
) -> Iterator[tuple[int, av.VideoFrame]]:
    decoder: Any = None
    track = -1
    need_key = True
    for tf in timed_frames(stream, frames_of):
        if tf.track_index != track:
            if decoder is not None:
                yield from _drain_video(decoder, None, offset_ms)
            track = tf.track_index
            decoder = quiet_decoder(stream.tracks[track].codec)
            need_key = True
        if need_key and not tf.keyframe:
            continue
        packet = av.Packet(tf.data)
        packet.pts = packet.dts = tf.pts_ms
        packet.time_base = MS
        try:
            pictures = decoder.decode(packet)
        except av.FFmpegError:
            need_key = True
            continue
        need_key = False
        for picture in pictures:
            yield _at(picture, offset_ms)
    if decoder is not None:
        yield from _drain_video(decoder, None, offset_ms)


def _drain_video(decoder: Any, packet: Any, offset_ms: int) -> Iterator[tuple[int, av.VideoFrame]]:
    try:
        pictures = decoder.decode(packet)
    except av.FFmpegError:
        return
    for picture in pictures:
        yield _at(picture, offset_ms)


def _at(picture: av.VideoFrame, offset_ms: int) -> tuple[int, av.VideoFrame]:
    pts = picture.pts if picture.pts is not None else 0
    return offset_ms + int(pts), picture


Pcm = tuple[bytes, bytes]  # planar 32-bit float, left and right


def decoded_audio(
    streams: Iterable[StreamPlan], frames_of: FramesOf, offset_ms: int = 0
) -> Iterator[tuple[int, av.AudioFrame]]:
    """(timeline sample, stereo planar float frame) for every decodable audio packet, in order."""
    sources = [_decode_audio_stream(s, frames_of, offset_ms) for s in streams]
    yield from heapq.merge(*sources, key=lambda item: item[0])


def _decode_audio_stream(
    stream: StreamPlan, frames_of: FramesOf, offset_ms: int
) -> Iterator[tuple[int, av.AudioFrame]]:
    decoder: Any = None
    track = -1
    resampler: Any = None  # only for what is not already stereo planar float
    for tf in timed_frames(stream, frames_of):
        if tf.track_index != track:
            track = tf.track_index
            decoder = quiet_decoder(stream.tracks[track].codec, stream.tracks[track].channels)
        try:
            frames = decoder.decode(av.Packet(tf.data))
        except av.FFmpegError:
            continue  # an Opus packet stands alone: only it is lost
        position = (offset_ms + tf.pts_ms) * SAMPLES_PER_MS
        for frame in frames:
            if frame.format.name == "fltp" and frame.layout.nb_channels == 2:
                converted = [frame]
            else:
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
                frame.pts = None
                converted = resampler.resample(frame)
            for out in converted:
                yield position, out
                position += out.samples


@dataclass
class _Piece:
    """A decoded frame placed at ``start``, less the ``skip`` samples an overlap cut off."""

    start: int  # sample position of the first kept sample
    frame: av.AudioFrame
    skip: int = 0

    @property
    def end(self) -> int:
        return self.start + self.frame.samples - self.skip

    def pcm(self, lo: int, hi: int) -> Pcm:
        """The samples of timeline positions ``lo`` to ``hi`` (within the piece)."""
        a = (lo - self.start + self.skip) * BYTES_PER_SAMPLE
        b = (hi - self.start + self.skip) * BYTES_PER_SAMPLE
        planes = self.frame.planes
        return bytes(memoryview(planes[0])[a:b]), bytes(memoryview(planes[1])[a:b])


class AlignedPcm:
    """A source of (sample position, frame) chunks read back as fixed windows of the timeline,
    with silence where nothing was captured. Windows must be read in increasing order."""

    def __init__(self, chunks: Iterator[tuple[int, av.AudioFrame]]) -> None:
        self._chunks = chunks
        self._pieces: deque[_Piece] = deque()
        self._cursor: int | None = None  # where the last placed chunk ended
        self._done = False

    def _pull(self) -> None:
        try:
            position, frame = next(self._chunks)
        except StopIteration:
            self._done = True
            return
        skip = 0
        if self._cursor is not None:
            if abs(position - self._cursor) <= CONTINUITY_SAMPLES:
                position = self._cursor
            elif position < self._cursor:
                skip, position = self._cursor - position, self._cursor
        if frame.samples > skip:
            self._pieces.append(_Piece(position, frame, skip))
            self._cursor = position + frame.samples - skip

    def _window(self, start: int, samples: int) -> _Piece | None:
        """Pulls what the window needs; the piece that is exactly the window, if one is."""
        end = start + samples
        while not self._done and (self._cursor is None or self._cursor < end):
            self._pull()
        while self._pieces and self._pieces[0].end <= start:
            self._pieces.popleft()
        first = self._pieces[0] if self._pieces else None
        if first is not None and first.start == start and first.end == end:
            return first  # the common case: one packet, one window
        return None

    def read(self, start: int, samples: int) -> Pcm:
        end = start + samples
        exact = self._window(start, samples)
        if exact is not None:
            return exact.pcm(start, end)
        left = bytearray(samples * BYTES_PER_SAMPLE)
        right = bytearray(samples * BYTES_PER_SAMPLE)
        for piece in self._pieces:
            if piece.start >= end:
                break
            lo, hi = max(piece.start, start), min(piece.end, end)
            if lo < hi:
                dst = (lo - start) * BYTES_PER_SAMPLE
                n = (hi - lo) * BYTES_PER_SAMPLE
                l_part, r_part = piece.pcm(lo, hi)
                left[dst : dst + n] = l_part
                right[dst : dst + n] = r_part
        return bytes(left), bytes(right)

    def read_frame(self, start: int, samples: int) -> av.AudioFrame:
        """The window as a frame stamped ``start``: the decoded frame itself when it is exactly
        the window (no copy), else one assembled from the pieces and silence."""
        exact = self._window(start, samples)
        if exact is None or exact.skip:
            return pcm_frame(self.read(start, samples), start)
        frame = exact.frame
        frame.pts, frame.time_base = start, RATE_TB
        return frame


RATE_TB = Fraction(1, RATE)


def pcm_frame(pcm: Pcm, pts: int | None) -> av.AudioFrame:
    left, right = pcm
    frame = av.AudioFrame(format="fltp", layout="stereo", samples=len(left) // BYTES_PER_SAMPLE)
    frame.planes[0].update(left)
    frame.planes[1].update(right)
    frame.sample_rate = RATE
    frame.time_base = RATE_TB
    frame.pts = pts
    return frame


class Mixer:
    """Sums several PCM windows of the same length into one float frame (FFmpeg's amix, not
    normalised: two voices keep their own loudness)."""

    def __init__(self, inputs: int) -> None:
        self.inputs = inputs
        self._graph: Any = None
        if inputs > 1:
            graph: Any = av.filter.Graph()
            sources = [
                graph.add_abuffer(
                    format="fltp", sample_rate=RATE, layout="stereo", time_base=RATE_TB
                )
                for _ in range(inputs)
            ]
            mix = graph.add("amix", f"inputs={inputs}:normalize=0:dropout_transition=0")
            sink = graph.add("abuffersink")
            for i, src in enumerate(sources):
                src.link_to(mix, 0, i)
            mix.link_to(sink)
            graph.configure()
            self._graph, self._sources, self._sink = graph, sources, sink

    def mix(self, windows: list[Pcm], pts: int) -> list[av.AudioFrame]:
        if self._graph is None:
            return [pcm_frame(windows[0], pts)]
        for src, data in zip(self._sources, windows, strict=True):
            src.push(pcm_frame(data, pts))
        out = []
        while True:
            try:
                out.append(self._sink.pull())
            except (av.BlockingIOError, av.EOFError):
                return out


def add_h264_encoder(out: Any, rate: int, options: dict[str, str]) -> Any:
    """An x264 output stream without B-frames (decode order = presentation order), threaded as
    the ffmpeg CLI runs it. PyAV defaults every codec to slice threads, which x264 takes as
    sliced threads: two slices per frame (more bits) and more CPU than frame threads."""
    st = out.add_stream("libx264", rate=rate, options=dict(options))
    st.codec_context.max_b_frames = 0
    st.codec_context.thread_type = "AUTO"  # FRAME | SLICE, FFmpeg's default: frame threads
    return st


class OutPacket(NamedTuple):
    """A packet on its way to the muxer. A plain tuple, compared field by field by
    ``heapq.merge``: decode time, then stream (two streams never tie on both)."""

    dts_ms: int
    stream_index: int
    end_ms: int  # where the packet's presentation ends
    size: int
    packet: Any


def encoded(stream: Any, frames: Iterable[Any], index: int) -> Iterator[OutPacket]:
    """Encode ``frames`` with the output ``stream``'s encoder, then flush it."""
    scale = 0.0  # ms per tick; an open encoder's time base never changes, so read it once
    for frame in itertools.chain(frames, [None]):
        for packet in stream.encode(frame):
            scale = scale or float(packet.time_base or MS) * UNITS_PER_S
            yield _out(packet, index, scale)


def _out(packet: Any, index: int, scale: float) -> OutPacket:
    pts = packet.pts or 0
    dts = packet.dts if packet.dts is not None else pts
    end = int((pts + (packet.duration or 0)) * scale)
    return OutPacket(int(dts * scale), index, end, packet.size, packet)
