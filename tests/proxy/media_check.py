"""Checks on what the proxy wrote: files match their events, frames decode with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from shared import chunkcrypt
from shared.capture_format import MAGIC, read_segment
from shared.events import AnyEvent, captures
from shared.integrity import Digest


@dataclass
class Decoded:
    frames_in: int
    frames_out: int
    errors: int
    keyframe_first: bool


def segments_of(events: list[AnyEvent], kind: str) -> list[captures.SegmentWritten]:
    segs = [e for e in events if isinstance(e, captures.SegmentWritten) and e.kind == kind]
    return sorted(segs, key=lambda s: (s.track_id, s.seq))


def assert_files_match(rec_dir: Path, events: list[AnyEvent], key: bytes | bytearray) -> int:
    """Every segment_written names a file under rec_dir, encrypted, whose plaintext SHA-256 and
    size match the event (decrypted with the recording's key)."""
    n = 0
    for e in events:
        if isinstance(e, captures.SegmentWritten):
            path = rec_dir / e.path
            assert path.resolve().is_relative_to(rec_dir.resolve()), e.path
            assert path.is_file(), f"missing segment {e.path}"
            assert e.participant_id not in e.path, e.path  # pseudonymous folders
            d = Digest()
            with path.open("rb") as fh:
                assert fh.read(len(chunkcrypt.MAGIC)) == chunkcrypt.MAGIC, e.path
                fh.seek(0)
                for piece in chunkcrypt.decrypt_stream(
                    fh, key, recording_id=e.recording_id, name=e.path
                ):
                    d.update(piece)
            assert MAGIC not in path.read_bytes(), f"plaintext in {e.path}"
            assert (d.sha256, d.size) == (e.sha256, e.size), f"digest mismatch for {e.path}"
            n += 1
    return n


def decode_segments(
    rec_dir: Path, segs: list[captures.SegmentWritten], codec: str, key: bytes | bytearray
) -> Decoded:
    ctx = av.CodecContext.create(codec, "r")
    frames_in = frames_out = errors = 0
    keyframe_first = True
    for seg in segs:
        header, frames = read_segment(
            rec_dir / seg.path, key=key, recording_id=seg.recording_id, name=seg.path
        )
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


def check_sender_reports(events: list[AnyEvent], max_skew_ms: float = 300.0) -> dict[str, int]:
    """Every track's RTCP sender reports, per kind; each must agree with when the proxy got the
    frames (publisher and proxy share this machine's clock): a report's NTP time, carried to the
    nearest segment start by the RTP clock, is within ``max_skew_ms`` of that frame's arrival.
    (A mapping error, a wrong origin, wrap or unit, is off by seconds or more; within the bound
    are network and jitter-buffer delay and the sender's varying encode time.)"""
    started = {e.track_id: e for e in events if isinstance(e, captures.TrackStarted)}
    counts: dict[str, int] = {}
    for track_id, track in started.items():
        segs = [e for e in events if isinstance(e, captures.SegmentWritten)]
        segs = [s for s in segs if s.track_id == track_id]
        reports = [r for s in segs for r in s.sender_reports]
        counts[track.kind] = len(reports)
        for rtp_ts, ntp_ns in reports:
            seg = min(segs, key=lambda s: abs(s.first_rtp_ts - rtp_ts))
            sent_ns = ntp_ns + (seg.first_rtp_ts - rtp_ts) * 1_000_000_000 // track.clock_rate
            delay_ms = (seg.first_wallclock_ns - sent_ns) / 1e6
            assert abs(delay_ms) <= max_skew_ms, (track.kind, rtp_ts, ntp_ns, seg, delay_ms)
    return counts
