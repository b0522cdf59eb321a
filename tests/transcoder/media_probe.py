"""Open an output file with PyAV and report what a player would meet: streams, duration,
decode errors, and whether timestamps strictly increase per stream."""

from __future__ import annotations

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
