"""The capture segment format: encoded frames exactly as received, appended, never decoded.

A segment's plaintext is::

    b"RGCAP1\\n"  u32 header_len  header_json
    then records: u64 rtp_ts  i64 wallclock_ns  u8 flags  u32 length  payload

and on disk it is encrypted under the recording's data key (``shared.chunkcrypt``, chunks of
``SEGMENT_CHUNK`` bytes, bound to the recording id and the segment's path in the recording):
nothing of the media, the codec or the participant reaches the backup in clear. The SHA-256 and
size in ``capture.segment_written`` are the plaintext's; ``SegmentWriter.stored`` digests the
bytes on disk (what the backup store checks in transit). Segments written before encryption (no
key) are still read: the SHA-256 in their events keeps them as tamper-evident as ever.

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
from typing import BinaryIO, Protocol

import msgspec

from . import chunkcrypt
from .integrity import Digest

MAGIC = b"RGCAP1\n"
_RECORD = struct.Struct("<QqBI")
_LEN = struct.Struct("<I")
FLAG_KEYFRAME = 1
PART_SUFFIX = ".part"
SEGMENT_SUFFIX = ".rgc"
# Small chunks: what a writer killed -9 loses is the chunk it was filling (as with the 8 KiB
# file buffer it replaces), and 16 bytes of tag per 8 KiB cost 0.2 %.
SEGMENT_CHUNK = 8192


class SegmentHeader(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    track_id: str
    kind: str  # "audio" | "video"
    codec: str  # MIME type, e.g. "video/VP8"
    clock_rate: int
    channels: int = 0
    seq: int = 0
    # Inside the encrypted file only: the folder names are pseudonyms (``shared.backup``), so
    # salvage learns whose segment it is from here.
    participant_id: str = ""
    session_id: str = ""


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
    """Appends frames to ``<path>.part``, encrypted, hashing the plaintext as it writes;
    ``close`` seals the last chunk, fsyncs and renames.

    ``name`` is the segment's path inside the recording folder (the AAD binds it): the final
    name, also while it is a ``.part``.
    """

    def __init__(
        self, path: Path, header: SegmentHeader, *, key: bytes | bytearray, name: str
    ) -> None:
        self.path = path
        self.part_path = path.with_name(path.name + PART_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: the encryptor hands over whole chunks, which go straight to the file.
        self._fh: BinaryIO = self.part_path.open("xb", buffering=0)
        self.digest = Digest()  # of the plaintext: what the event and the customer check
        self.stored = Digest()  # of the file's bytes: what the backup store checks
        self.stats = SegmentStats()
        self._enc = chunkcrypt.Encryptor(
            key, recording_id=header.recording_id, name=name, chunk_size=SEGMENT_CHUNK
        )
        head = msgspec.json.encode(header)
        self._write(MAGIC + _LEN.pack(len(head)) + head)

    def _sink(self, data: bytes | bytearray | memoryview) -> None:
        self.stored.update(data)
        self._fh.write(data)

    def _write(self, data: bytes) -> None:
        self.digest.update(data)
        self._enc.feed(data, self._sink)

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
        self._enc.finish(self._sink)
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.part_path, self.path)
        fsync_dir(self.path.parent)

    def abandon(self) -> None:
        self._enc.wipe()
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


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def read_header(fh: _Reader) -> SegmentHeader:
    read = fh.read
    if read(len(MAGIC)) != MAGIC:
        raise SegmentFormatError("not a Resguardo capture segment (bad magic)")
    raw_len = read(_LEN.size)
    if len(raw_len) != _LEN.size:
        raise SegmentFormatError("capture segment header is truncated")
    (n,) = _LEN.unpack(raw_len)
    return msgspec.json.decode(read(n), type=SegmentHeader)


def read_segment(
    path: Path,
    *,
    key: bytes | bytearray | None = None,
    recording_id: str = "",
    name: str = "",
    salvage: bool = False,
) -> tuple[SegmentHeader, Iterator[Frame]]:
    """Header and a lazy iterator of frames; a trailing partial record is silently dropped.

    An encrypted segment needs its recording's ``key``, id and its ``name`` (path in the
    recording);
    every byte is verified before it is parsed, and a tampered chunk raises
    ``chunkcrypt.TamperedError`` (from the iterator, or at once for the header). ``salvage``
    reads what a killed writer left: the chunks that verify, up to the first that does not.
    """
    fh = path.open("rb")
    try:
        magic = fh.read(len(chunkcrypt.MAGIC))
        fh.seek(0)
        if magic == chunkcrypt.MAGIC:
            if key is None:
                raise SegmentFormatError("the segment is encrypted: it needs the recording key")
            chunks = (
                chunkcrypt.decrypt_prefix(fh, key, recording_id=recording_id, name=name)
                if salvage
                else chunkcrypt.decrypt_stream(fh, key, recording_id=recording_id, name=name)
            )
            src: _Reader = chunkcrypt.PlainReader(chunks)
        else:
            src = fh
        header = read_header(src)
    except Exception:
        fh.close()
        raise

    def frames() -> Iterator[Frame]:
        with fh:
            while True:
                raw = src.read(_RECORD.size)
                if len(raw) < _RECORD.size:
                    return
                rtp_ts, wall, flags, length = _RECORD.unpack(raw)
                data = src.read(length)
                if len(data) < length:
                    return
                yield Frame(rtp_ts, wall, bool(flags & FLAG_KEYFRAME), data)

    return header, frames()
