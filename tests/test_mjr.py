"""bench/janus.py's .mjr reader on synthetic files built per Janus's format (no Janus needed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bench.janus import MjrError, count_frames, parse_rtp, read_mjr

FIRST_US = 1_700_000_000_000_000  # the header's "u": real time of the first packet


def rtp(
    seq: int,
    ts: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrc: int = 0,
    extension: bool = False,
    padding: int = 0,
) -> bytes:
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | csrc
    out = struct.pack("!BBHI", b0, (0x80 if marker else 0) | 96, seq & 0xFFFF, ts) + b"\0" * 4
    out += b"\0\0\0\1" * csrc
    if extension:
        out += struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\0\0"
    out += payload
    if padding:
        out += b"\0" * (padding - 1) + bytes([padding])
    return out


def mjr(path: Path, kind: str, records: list[tuple[int, bytes]], cut: int = 0) -> Path:
    info = json.dumps({"t": kind, "c": "vp8" if kind == "v" else "opus", "s": 1, "u": FIRST_US})
    data = b"MJR00002" + struct.pack("!H", len(info)) + info.encode()
    for at_ms, packet in records:
        data += b"MEET" + struct.pack("!IH", at_ms, len(packet)) + packet
    path.write_bytes(data[: len(data) - cut] if cut else data)
    return path


START, MIDDLE = b"\x10" + b"v" * 20, b"\x00" + b"v" * 20  # VP8 descriptor: S=1 / S=0


def video_records(frames: int, per_frame: int = 3, seq0: int = 0) -> list[tuple[int, bytes]]:
    out = []
    for f in range(frames):
        for i in range(per_frame):
            seq = seq0 + f * per_frame + i
            payload = START if i == 0 else MIDDLE
            out.append((f * 33, rtp(seq, 3000 * f, payload, marker=i == per_frame - 1)))
    return out


def test_video_frames_are_rtp_timestamps_complete_when_every_packet_is_there(
    tmp_path: Path,
) -> None:
    # 3 packets a frame: frame 1 loses its middle and marker packets, frame 3 its first one
    records = [r for k, r in enumerate(video_records(10)) if k not in {4, 5, 9}]
    rec = read_mjr(mjr(tmp_path / "v.mjr", "v", records))
    assert rec.kind == "video" and rec.info["c"] == "vp8"
    count = rec.frames()
    assert (count.frames, count.complete) == (10, 8)


def test_sequence_numbers_unwrap_and_retransmissions_count_once(tmp_path: Path) -> None:
    records = video_records(4, seq0=65_530)  # wraps past 65535 in frame 2
    records.insert(5, records[4])  # a retransmitted packet, recorded twice
    rec = read_mjr(mjr(tmp_path / "v.mjr", "v", records))
    assert [p.seq for p in rec.packets][-1] == 65_530 + 11
    assert rec.frames().complete == 4
    audio = [(20 * i, rtp(65_535 + i, 960 * i, b"opus")) for i in range(5)]
    audio.append(audio[2])
    arec = read_mjr(mjr(tmp_path / "a.mjr", "a", audio))
    assert arec.kind == "audio"
    assert (arec.frames().frames, arec.frames().complete) == (5, 5)


def test_window_counts_frames_by_the_real_time_of_their_first_packet(tmp_path: Path) -> None:
    first = FIRST_US / 1e6
    video = mjr(tmp_path / "v.mjr", "v", video_records(30))  # frame f written at f * 33 ms
    audio = mjr(tmp_path / "a.mjr", "a", [(20 * i, rtp(i, 960 * i, b"o")) for i in range(50)])
    rec = read_mjr(video)
    assert rec.frames(since=first + 0.1, until=first + 0.5).frames == 12  # frames 4..15
    frames, complete, during = count_frames([video, audio], first + 0.1, first + 0.5)
    assert (frames, complete) == (80, 80)
    assert during == 12 + 20  # audio packets 5..24


def test_rtp_header_csrc_extension_and_padding_are_skipped() -> None:
    marker, seq, ts, payload = parse_rtp(
        rtp(7, 90_000, b"payload", marker=True, csrc=2, extension=True, padding=4)
    )
    assert (marker, seq, ts, payload) == (True, 7, 90_000, b"payload")
    with pytest.raises(MjrError):
        parse_rtp(b"\x00" * 12)  # not RTP version 2


def test_empty_truncated_and_foreign_files(tmp_path: Path) -> None:
    empty = tmp_path / "e.mjr"
    empty.write_bytes(b"MJR00002")  # a recorder that never saw a packet
    assert read_mjr(empty).packets == []
    cut = read_mjr(mjr(tmp_path / "c.mjr", "v", video_records(2), cut=5))
    assert len(cut.packets) == 5  # the half-written last record is left out
    foreign = tmp_path / "f.mjr"
    foreign.write_bytes(b"RIFF0000")
    with pytest.raises(MjrError):
        read_mjr(foreign)
