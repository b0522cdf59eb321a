"""Checks on what the proxy wrote: files match their events, frames decode with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from shared.capture_format import read_segment
from shared.events import AnyEvent, captures
from shared.integrity import digest_file


@dataclass
class Decoded:
    frames_in: int
    frames_out: int
    errors: int
    keyframe_first: bool


def segments_of(events: list[AnyEvent], kind: str) -> list[captures.SegmentWritten]:
    segs = [e for e in events if isinstance(e, captures.SegmentWritten) and e.kind == kind]
    return sorted(segs, key=lambda s: (s.track_id, s.seq))


def assert_files_match(rec_dir: Path, events: list[AnyEvent]) -> int:
    """Every segment_written names a file under rec_dir whose SHA-256 and size match."""
    n = 0
    for e in events:
        if isinstance(e, captures.SegmentWritten):
            path = rec_dir / e.path
            assert path.resolve().is_relative_to(rec_dir.resolve()), e.path
            assert path.is_file(), f"missing segment {e.path}"
            d = digest_file(path)
            assert (d.sha256, d.size) == (e.sha256, e.size), f"digest mismatch for {e.path}"
            n += 1
    return n


def decode_segments(rec_dir: Path, segs: list[captures.SegmentWritten], codec: str) -> Decoded:
    ctx = av.CodecContext.create(codec, "r")
    frames_in = frames_out = errors = 0
    keyframe_first = True
    for seg in segs:
        header, frames = read_segment(rec_dir / seg.path)
        assert header.seq == seg.seq and header.track_id == seg.track_id
        for i, frame in enumerate(frames):
            if i == 0 and header.kind == "video" and not frame.keyframe:
                keyframe_first = False
            frames_in += 1
            try:
                frames_out += len(ctx.decode(av.Packet(frame.data)))
            except av.FFmpegError:
                errors += 1
    try:
        frames_out += len(ctx.decode(None))  # flush
    except av.FFmpegError:
        errors += 1
    return Decoded(frames_in, frames_out, errors, keyframe_first)
