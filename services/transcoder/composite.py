"""The call's composite: a grid of every participant present, with the mixed audio of all.

Planned from the participants' own file plans (pure), then rendered frame by frame: each
participant's video is decoded as the output clock reaches it, scaled into its cell, and the
canvas encoded; each participant's audio is placed on the call's sample timeline and mixed.
The grid follows joins and leaves: a participant has a cell while any of their tracks runs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .media import (
    RATE,
    SAMPLES_PER_MS,
    AlignedPcm,
    Mixer,
    OutPacket,
    add_h264_encoder,
    decoded_audio,
    decoded_video,
    encoded,
)
from .plan import UNITS_PER_S, FilePlan, OutputOptions, StreamPlan
from .remux import (
    CONTAINER_OPTIONS,
    TIME_BASE,
    RemuxResult,
    Throttle,
    mux_in_order,
    track_frames,
)
from .sealing import RecordingFiles
from .state import Segment

WIDTH, HEIGHT, FPS = 640, 360, 15
HOLD_MS = 200  # a participant keeps their cell this long after their last frame
BLACK = (16, 128, 128)
NO_VIDEO = (40, 128, 128)  # a present participant without a picture (audio only, or no key frame)
VP8_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0"}
VP8_BIT_RATE = 800_000
OPUS_BIT_RATE = 64_000
H264_OPTIONS = {"preset": "veryfast", "crf": "26"}


@dataclass(frozen=True)
class Member:
    plan: FilePlan  # the participant's native (as captured) streams
    offset_ms: int  # where the participant's file time zero sits on the call's timeline
    spans: tuple[tuple[int, int], ...]  # when they are on the grid, call timeline ms

    @property
    def participant_id(self) -> str:
        return self.plan.participant_id

    def video(self) -> list[StreamPlan]:
        return [s for s in self.plan.streams if s.kind == "video"]

    def audio(self) -> list[StreamPlan]:
        return [s for s in self.plan.streams if s.kind == "audio"]

    def present(self, t_ms: int) -> bool:
        return any(a <= t_ms < b for a, b in self.spans)


@dataclass(frozen=True)
class CompositePlan:
    name: str
    container: str
    content_type: str
    t0_ns: int
    end_ms: int  # the call's length
    members: tuple[Member, ...]  # in order of appearance
    video_codec: str  # output MIME type, "" for none
    audio_codec: str
    participant_id: str = ""

    @property
    def codecs(self) -> list[str]:
        return [c for c in (self.video_codec, self.audio_codec) if c]

    @property
    def segments(self) -> list[Segment]:
        return [seg for m in self.members for seg in m.plan.segments]


def plan_composite(native: list[FilePlan], options: OutputOptions) -> CompositePlan | None:
    """The composite of the participants' native plans, or None when nobody sent anything.

    ``native`` are the per-participant plans of the captured codecs (``OutputOptions()`` with the
    wanted tracks); the composite's own codecs follow ``options.format``.
    """
    if not native:
        return None
    t0 = min(p.t0_ns for p in native)
    members = []
    for plan in native:
        offset = (plan.t0_ns - t0 + 500_000) // 1_000_000
        spans = sorted(
            (offset + t.start_ms, offset + t.end_ms + s.info.default_frame_ms + HOLD_MS)
            for s in plan.streams
            for t in s.tracks
        )
        members.append(Member(plan, offset, tuple(spans)))
    members.sort(key=lambda m: (m.spans[0][0], m.participant_id))
    end = max(b - HOLD_MS for m in members for _, b in m.spans)
    has_video = any(m.video() for m in members)
    has_audio = any(m.audio() for m in members)
    mp4 = options.format == "mp4"
    media = "video" if has_video else "audio"
    # Participant ids start with a letter or digit: "_composite" can never be one of theirs.
    base = "_composite" if any(p.participant_id == "composite" for p in native) else "composite"
    return CompositePlan(
        name=f"{base}.mp4" if mp4 else f"{base}.webm",
        container="mp4" if mp4 else "webm",
        content_type=f"{media}/mp4" if mp4 else f"{media}/webm",
        t0_ns=t0,
        end_ms=end,
        members=tuple(members),
        video_codec=("video/h264" if mp4 else "video/vp8") if has_video else "",
        audio_codec=("audio/aac" if mp4 else "audio/opus") if has_audio else "",
    )


# -- layout (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    width: int
    height: int


def grid(n: int, width: int = WIDTH, height: int = HEIGHT) -> list[Cell]:
    """``n`` cells, row by row, as square a grid as fits (1: whole frame, 2: side by side)."""
    if n <= 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cw, ch = (width // cols) & ~1, (height // rows) & ~1
    return [Cell((i % cols) * cw, (i // cols) * ch, cw, ch) for i in range(n)]


def fit(src_w: int, src_h: int, cell: Cell) -> Cell:
    """The largest even-sized box of the source's aspect ratio centred in ``cell``."""
    scale = min(cell.width / src_w, cell.height / src_h)
    w = max(2, int(src_w * scale) & ~1)
    h = max(2, int(src_h * scale) & ~1)
    x = cell.x + ((cell.width - w) // 2 & ~1)
    y = cell.y + ((cell.height - h) // 2 & ~1)
    return Cell(x, y, w, h)


# -- rendering ---------------------------------------------------------------------------------


class Canvas:
    """A yuv420p picture assembled row by row from scaled cells."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.planes = [
            bytearray(bytes([BLACK[0]]) * (width * height)),
            bytearray(bytes([BLACK[1]]) * (width * height // 4)),
            bytearray(bytes([BLACK[2]]) * (width * height // 4)),
        ]

    def fill(self, cell: Cell, color: tuple[int, int, int]) -> None:
        for i, value in enumerate(color):
            sub = 0 if i == 0 else 1
            stride = self.width >> sub
            row = bytes([value]) * (cell.width >> sub)
            for y in range(cell.y >> sub, (cell.y + cell.height) >> sub):
                start = y * stride + (cell.x >> sub)
                self.planes[i][start : start + len(row)] = row

    def paste(self, picture: av.VideoFrame, box: Cell) -> None:
        """``picture`` must already be ``box``-sized yuv420p."""
        for i in range(3):
            sub = 0 if i == 0 else 1
            plane = picture.planes[i]
            data = memoryview(plane)
            line = plane.line_size
            w, h = box.width >> sub, box.height >> sub
            stride = self.width >> sub
            dst = (box.y >> sub) * stride + (box.x >> sub)
            target = self.planes[i]
            for y in range(h):
                target[dst : dst + w] = data[y * line : y * line + w]
                dst += stride

    def frame(self, pts: int) -> av.VideoFrame:
        out = av.VideoFrame(self.width, self.height, "yuv420p")
        for i in range(3):
            sub = 0 if i == 0 else 1
            plane = out.planes[i]
            w, h = self.width >> sub, self.height >> sub
            if plane.line_size == w:
                plane.update(bytes(self.planes[i]))
            else:
                padded = bytearray(plane.line_size * h)
                for y in range(h):
                    padded[y * plane.line_size : y * plane.line_size + w] = self.planes[i][
                        y * w : (y + 1) * w
                    ]
                plane.update(bytes(padded))
        out.pts = pts
        out.time_base = TIME_BASE
        return out


class _Picture:
    """A participant's current picture, advanced as the output clock moves."""

    def __init__(self, member: Member, files: RecordingFiles) -> None:
        self._source = decoded_video(
            member.video(), lambda t: track_frames(files, t), member.offset_ms
        )
        self._next: tuple[int, av.VideoFrame] | None = None
        self.current: av.VideoFrame | None = None
        self.until_ms = -1  # the current picture stands until its video track ends
        self._spans = [
            (member.offset_ms + t.start_ms, member.offset_ms + t.end_ms + HOLD_MS)
            for s in member.video()
            for t in s.tracks
        ]
        self._scaled: tuple[int, Cell, av.VideoFrame] | None = None
        self._serial = 0
        self._advance()

    def _advance(self) -> None:
        self._next = next(self._source, None)

    def at(self, t_ms: int) -> av.VideoFrame | None:
        while self._next is not None and self._next[0] <= t_ms:
            self.current = self._next[1]
            self._serial += 1
            self._advance()
        if self.current is None or not any(a <= t_ms < b for a, b in self._spans):
            return None
        return self.current

    def scaled(self, picture: av.VideoFrame, box: Cell) -> av.VideoFrame:
        if self._scaled is not None and self._scaled[:2] == (self._serial, box):
            return self._scaled[2]
        out = picture.reformat(box.width, box.height, "yuv420p")
        self._scaled = (self._serial, box, out)
        return out


def _video_packets(
    plan: CompositePlan, files: RecordingFiles, st: Any, index: int
) -> Iterator[OutPacket]:
    pictures = {m.participant_id: _Picture(m, files) for m in plan.members if m.video()}

    def frames() -> Iterator[av.VideoFrame]:
        k = 0
        while (t_ms := k * UNITS_PER_S // FPS) < plan.end_ms:
            present = [m for m in plan.members if m.present(t_ms)]
            canvas = Canvas(WIDTH, HEIGHT)
            for member, cell in zip(present, grid(len(present)), strict=True):
                source = pictures.get(member.participant_id)
                picture = source.at(t_ms) if source else None
                if source is None or picture is None:
                    canvas.fill(cell, NO_VIDEO)
                    continue
                box = fit(picture.width, picture.height, cell)
                canvas.paste(source.scaled(picture, box), box)
            # Pictures of participants not on the grid still advance (decoding must go on).
            for pid, source in pictures.items():
                if not any(m.participant_id == pid for m in present):
                    source.at(t_ms)
            yield canvas.frame(t_ms)
            k += 1

    yield from encoded(st, frames(), index)


def _audio_packets(
    plan: CompositePlan, files: RecordingFiles, st: Any, index: int
) -> Iterator[OutPacket]:
    voices = [
        AlignedPcm(decoded_audio(m.audio(), lambda t: track_frames(files, t), m.offset_ms))
        for m in plan.members
        if m.audio()
    ]
    mixer = Mixer(len(voices))
    block = 1024 if plan.audio_codec == "audio/aac" else 960
    convert = av.AudioResampler(format=st.codec_context.format.name, layout="stereo", rate=RATE)

    def frames() -> Iterator[av.AudioFrame]:
        position, end = 0, plan.end_ms * SAMPLES_PER_MS
        while position < end:
            n = min(block, end - position)
            windows = [v.read(position, n) for v in voices]
            for mixed in mixer.mix(windows, position):
                for frame in convert.resample(mixed):
                    frame.pts = position
                    frame.time_base = Fraction(1, RATE)
                    yield frame
            position += n

    yield from encoded(st, frames(), index)


def render(
    plan: CompositePlan,
    files: RecordingFiles,
    out_file: Path | io.RawIOBase,
    *,
    max_bytes_per_s: int = 0,
) -> RemuxResult:
    """Write the composite to ``out_file`` (a path or a seekable file), one frame at a time."""
    throttle = Throttle(max_bytes_per_s)
    target = str(out_file) if isinstance(out_file, Path) else out_file
    with av.open(target, "w", format=plan.container, container_options=CONTAINER_OPTIONS) as out:
        sources: list[Iterator[OutPacket]] = []
        if plan.video_codec:
            if plan.video_codec == "video/h264":
                vst = add_h264_encoder(out, FPS, H264_OPTIONS)
            else:
                vst = out.add_stream("libvpx", rate=FPS, options=dict(VP8_OPTIONS))
                vst.bit_rate = VP8_BIT_RATE
            vst.width, vst.height, vst.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            vst.codec_context.time_base = TIME_BASE
            vst.time_base = TIME_BASE
            sources.append(_video_packets(plan, files, vst, len(sources)))
        if plan.audio_codec:
            if plan.audio_codec == "audio/aac":
                ast = out.add_stream("aac", rate=RATE, layout="stereo")
            else:
                ast = out.add_stream("libopus", rate=RATE, layout="stereo")
            ast.bit_rate = OPUS_BIT_RATE if plan.audio_codec == "audio/opus" else 128_000
            ast.time_base = Fraction(1, RATE)
            sources.append(_audio_packets(plan, files, ast, len(sources)))
        return mux_in_order(out, sources, throttle)
