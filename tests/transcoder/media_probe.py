"""Open an output file with PyAV and report what a player would meet: streams, duration,
decode errors, and whether timestamps strictly increase per stream."""

from __future__ import annotations

import array
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import av


@dataclass
class Probe:
    streams: list[tuple[str, str]]  # (type, codec name)
    duration_s: float  # from the container header
    packet_span_s: float  # first packet start to last packet end, over all streams
    frames: dict[str, int] = field(default_factory=dict)  # decoded frames per stream type
    errors: list[str] = field(default_factory=list)
    pts: dict[int, list[int]] = field(default_factory=dict)  # per stream index, in file order
    time_base: dict[int, float] = field(default_factory=dict)

    def strictly_increasing(self) -> bool:
        return all(all(b > a for a, b in itertools.pairwise(p)) for p in self.pts.values())

    def largest_gap_s(self, index: int) -> float:
        p = self.pts[index]
        tb = self.time_base[index]
        return max((b - a) * tb for a, b in itertools.pairwise(p))


def probe(path: Path) -> Probe:
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # libav logs nothing to capture unless a level is set
    try:
        return _probe(path)
    finally:
        av.logging.set_level(previous)


def _probe(path: Path) -> Probe:
    errors: list[str] = []
    with av.logging.Capture() as logs:
        with av.open(str(path)) as container:
            streams = [(s.type, s.codec_context.name) for s in container.streams]
            duration = (container.duration or 0) / 1_000_000
            result = Probe(streams=streams, duration_s=duration, packet_span_s=0.0)
            decoders = {s.index: s.codec_context for s in container.streams}
            start: float | None = None
            end = 0.0
            for packet in container.demux():
                stream = packet.stream
                if packet.pts is None:  # the demuxer's flush packet
                    continue
                tb = float(stream.time_base or 0)
                result.time_base[stream.index] = tb
                result.pts.setdefault(stream.index, []).append(packet.pts)
                t0 = packet.pts * tb
                start = t0 if start is None else min(start, t0)
                end = max(end, t0 + (packet.duration or 0) * tb)
                try:
                    frames = decoders[stream.index].decode(packet)
                except av.FFmpegError as exc:
                    errors.append(f"stream {stream.index}: {exc}")
                    continue
                result.frames[stream.type] = result.frames.get(stream.type, 0) + len(frames)
            for index, ctx in decoders.items():
                try:
                    n = len(ctx.decode(None))
                except av.FFmpegError as exc:
                    errors.append(f"stream {index} flush: {exc}")
                    continue
                kind = container.streams[index].type
                result.frames[kind] = result.frames.get(kind, 0) + n
            result.packet_span_s = end - (start or 0.0)
    errors.extend(f"libav: {msg}" for level, _, msg in logs if level <= av.logging.ERROR)
    result.errors = errors
    return result


# -- what a viewer sees and hears: flashes and beeps -------------------------------------------

BRIGHT = 128  # mean luma above this is a flash (the publisher's dark frames are ~20)
LOUD = 3000  # s16 amplitude above this is a beep (silence decodes to a few units)
QUIET_S = 0.3  # a beep's onset follows at least this much quiet


def _mean_luma(frame: av.VideoFrame) -> float:
    plane = frame.planes[0]
    data = bytes(plane)
    rows = range(0, frame.height, 8)
    total = count = 0
    for y in rows:
        row = data[y * plane.line_size : y * plane.line_size + frame.width : 8]
        total += sum(row)
        count += len(row)
    return total / max(count, 1)


def flash_times(path: Path) -> list[float]:
    """Presentation times (s) of every frame where the picture turns bright."""
    out: list[float] = []
    bright = False
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            now = _mean_luma(frame) > BRIGHT
            if now and not bright and frame.pts is not None:
                out.append(float(frame.pts * frame.time_base))
            bright = now
    return out


def beep_onsets(path: Path) -> list[float]:
    """Times (s) where sound starts after at least ``QUIET_S`` of quiet, to the millisecond."""
    out: list[float] = []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    quiet_since: float | None = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            start = float(frame.pts * frame.time_base)
            for mono in resampler.resample(frame):
                samples = array.array("h", bytes(mono.planes[0])[: mono.samples * 2])
                for i in range(0, len(samples), 48):
                    t = start + i / 48_000
                    window = samples[i : i + 48]
                    loud = max(window) > LOUD or -min(window) > LOUD
                    if loud:
                        if quiet_since is not None and t - quiet_since >= QUIET_S:
                            out.append(t)
                        quiet_since = None
                    elif quiet_since is None:
                        quiet_since = t
                start += mono.samples / 48_000
    return out


def x264_settings(path: Path) -> dict[str, str]:
    """The settings x264 wrote into the stream (its version SEI: "... options: key=value ...")."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    end = data.index(b"\x00", start)
    _, options = data[start:end].decode("ascii").split(" options: ", 1)
    return dict(item.split("=", 1) for item in options.split() if "=" in item)
