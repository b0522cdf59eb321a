"""The capture segment format: encoded frames exactly as received, appended, never decoded.

A segment file is::

    b"RGCAP1\\n"  u32 header_len  header_json
    then records: u64 rtp_ts  i64 wallclock_ns  u8 flags  u32 length  payload

``rtp_ts`` is the track's RTP timestamp unwrapped and starting at 0; ``wallclock_ns`` is when the
proxy completed the frame. A record cut short by a crash is detected and dropped by the reader;
every complete record before it is usable. Segments are written as ``*.part`` and renamed when
complete, so a finished segment is never confused with one that was being written.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .integrity import Digest

MAGIC = b"RGCAP1\n"
_RECORD = struct.Struct("<QqBI")
_LEN = struct.Struct("<I")
FLAG_KEYFRAME = 1
PART_SUFFIX = ".part"
SEGMENT_SUFFIX = ".rgc"


class SegmentHeader(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    track_id: str
    kind: str  # "audio" | "video"
    codec: str  # MIME type, e.g. "video/VP8"
    clock_rate: int
    channels: int = 0
    seq: int = 0


@dataclass(frozen=True)
class Frame:
    rtp_ts: int
    wallclock_ns: int
    keyframe: bool
    data: bytes


@dataclass
class SegmentStats:
    frames: int = 0
    keyframes: int = 0
    first_rtp_ts: int = -1
    last_rtp_ts: int = -1
    first_wallclock_ns: int = 0
    last_wallclock_ns: int = 0


class SegmentWriter:
    """Appends frames to ``<path>.part``, hashing as it writes; ``close`` fsyncs and renames."""

    def __init__(self, path: Path, header: SegmentHeader) -> None:
        self.path = path
        self.part_path = path.with_name(path.name + PART_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.part_path.open("xb")
        self.digest = Digest()
        self.stats = SegmentStats()
        head = msgspec.json.encode(header)
        self._write(MAGIC + _LEN.pack(len(head)) + head)

    def _write(self, data: bytes) -> None:
        self.digest.update(data)
        self._fh.write(data)

    def append(self, frame: Frame) -> None:
        flags = FLAG_KEYFRAME if frame.keyframe else 0
        self._write(_RECORD.pack(frame.rtp_ts, frame.wallclock_ns, flags, len(frame.data)))
        self._write(frame.data)
        s = self.stats
        if s.frames == 0:
            s.first_rtp_ts = frame.rtp_ts
            s.first_wallclock_ns = frame.wallclock_ns
        s.frames += 1
        s.keyframes += flags
        s.last_rtp_ts = frame.rtp_ts
        s.last_wallclock_ns = frame.wallclock_ns

    def close(self) -> None:
        """Make the segment durable and visible under its final name."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.part_path, self.path)
        fsync_dir(self.path.parent)

    def abandon(self) -> None:
        self._fh.close()
        self.part_path.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentFormatError(ValueError):
    pass


def read_header(fh: object) -> SegmentHeader:
    read = fh.read  # type: ignore[attr-defined]
    if read(len(MAGIC)) != MAGIC:
        raise SegmentFormatError("not a Resguardo capture segment (bad magic)")
    raw_len = read(_LEN.size)
    if len(raw_len) != _LEN.size:
        raise SegmentFormatError("capture segment header is truncated")
    (n,) = _LEN.unpack(raw_len)
    return msgspec.json.decode(read(n), type=SegmentHeader)


def read_segment(path: Path) -> tuple[SegmentHeader, Iterator[Frame]]:
    """Header and a lazy iterator of frames; a trailing partial record is silently dropped."""
    fh = path.open("rb")
    try:
        header = read_header(fh)
    except Exception:
        fh.close()
        raise

    def frames() -> Iterator[Frame]:
        with fh:
            while True:
                raw = fh.read(_RECORD.size)
                if len(raw) < _RECORD.size:
                    return
                rtp_ts, wall, flags, length = _RECORD.unpack(raw)
                data = fh.read(length)
                if len(data) < length:
                    return
                yield Frame(rtp_ts, wall, bool(flags & FLAG_KEYFRAME), data)

    return header, frames()
