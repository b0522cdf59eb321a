"""The proxy's pure rules and its salvage of partial files, without any server."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from services.proxy import capture, facts, media, salvage
from services.proxy.errors import WhipRefused
from services.proxy.whip import participant_from
from shared import chunkcrypt
from shared.backup import pseudonym
from shared.capture_format import (
    MAGIC,
    SEGMENT_CHUNK,
    Frame,
    SegmentHeader,
    SegmentWriter,
    read_segment,
)
from shared.events import captures, now
from shared.ids import is_safe_name

RID, TEN = "rec_" + "a" * 24, "ten_" + "b" * 16


def test_keyframes() -> None:
    key = bytes([0x10, 0x02, 0x00]) + b"\x9d\x01\x2a" + b"\x80\x02\x68\x01"  # 640x360
    assert media.is_keyframe("VP8", key)  # P bit 0 and the start code: key frame
    assert not media.is_keyframe("VP8", bytes([0x11]) + key[1:])  # P bit 1: inter frame
    assert not media.is_keyframe("VP8", key[:3] + b"\x00\x00\x00" + key[6:])  # no start code
    assert not media.is_keyframe("VP8", key[:8])  # cut short
    assert not media.is_keyframe("VP8", b"")
    idr = b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x68\xce" + b"\x00\x00\x01\x65\x88"
    delta = b"\x00\x00\x00\x01\x41\x9a\x00"
    assert media.h264_nal_types(idr) == [7, 8, 5]
    assert media.is_keyframe("H264", idr) and not media.is_keyframe("H264", delta)
    # the tail of an IDR frame whose first packets were lost is not a key frame
    assert not media.is_keyframe("H264", b"\x12\x34" + idr[10:])
    assert media.is_keyframe("opus", b"\x01")


def test_codec_filter_keeps_recordable_codecs_and_their_rtx() -> None:
    refs = [
        media.CodecRef("video/VP8", 96),
        media.CodecRef("video/rtx", 97, apt=96),
        media.CodecRef("video/VP9", 98),
        media.CodecRef("video/rtx", 99, apt=98),
        media.CodecRef("video/H264", 102),
    ]
    assert media.recordable_payload_types("video", refs) == [96, 97, 102]
    audio = [media.CodecRef("audio/PCMU", 0), media.CodecRef("audio/opus", 111)]
    assert media.recordable_payload_types("audio", audio) == [111]
    assert media.recordable_payload_types("audio", audio[:1]) == []


@pytest.mark.parametrize(
    ("offer", "words"),
    [
        ([], "no audio or video"),
        ([media.OfferMedia("audio", "sendonly", ("PCMU",))], "cannot be recorded"),
        ([media.OfferMedia("video", "recvonly", ("VP8",))], "does not send"),
        (
            [
                media.OfferMedia("video", "sendonly", ("VP8",)),
                media.OfferMedia("video", "sendonly", ("VP8",)),
            ],
            "more than one video",
        ),
    ],
)
def test_offer_checks(offer: list[media.OfferMedia], words: str) -> None:
    with pytest.raises(WhipRefused) as err:
        media.check_offer(offer)
    assert err.value.status == 400 and words in str(err.value)


def test_offer_check_accepts_audio_and_video() -> None:
    media.check_offer(
        [
            media.OfferMedia("audio", "sendonly", ("opus", "PCMU")),
            media.OfferMedia("video", "sendrecv", ("VP8", "rtx", "H264")),
        ]
    )


def test_rotation() -> None:
    assert not media.segment_elapsed(0, 89_999, 90_000, 1.0)
    assert media.segment_elapsed(0, 90_000, 90_000, 1.0)
    assert media.rotate_now("audio", False, True)
    assert not media.rotate_now("video", False, True)  # wait for the keyframe
    assert media.rotate_now("video", True, True)
    assert not media.rotate_now("video", True, False)


@pytest.mark.parametrize(
    ("name", "pid"),
    [("Ana María", "Ana-Maria"), ("bo_2", "bo_2"), ("x" * 100, "x" * 40)],
)
def test_participant_names(name: str, pid: str) -> None:
    got, display = participant_from(name)
    assert (got, display) == (pid, name)
    assert is_safe_name(facts.track_id_for(got, "0123abcd", "video"))


def test_participant_default_and_refusals() -> None:
    pid, _ = participant_from(None)
    assert pid.startswith("p-") and is_safe_name(pid)
    pid, _ = participant_from("日本")  # nothing ASCII to keep
    assert pid.startswith("p-")
    for bad in ("../x", "a/b", "a\x00b", "a\\b", "a\nb", "y" * 201):
        with pytest.raises(WhipRefused):
            participant_from(bad)


def _event(cls: type, **kw: object) -> object:
    return cls(event_id="e", recording_id=RID, tenant_id=TEN, occurred_at=now(), **kw)


def test_decide_close_ends_what_a_dead_process_left_open() -> None:
    joined = _event(
        captures.ParticipantJoined, participant_id="ana", session_id="s1", joined_at_ns=1
    )
    started = _event(
        captures.TrackStarted,
        participant_id="ana",
        session_id="s1",
        track_id="ana-s1-audio",
        kind="audio",
        codec="audio/opus",
        clock_rate=48000,
        first_frame_wallclock_ns=2,
    )
    seg = {
        "participant_id": "ana",
        "track_id": "ana-s1-audio",
        "kind": "audio",
        "path": "p",
        "sha256": "0" * 64,
        "size": 1,
        "frames": 10,
        "first_rtp_ts": 0,
        "last_rtp_ts": 1,
        "first_wallclock_ns": 0,
        "last_wallclock_ns": 1,
    }
    segs = [_event(captures.SegmentWritten, seq=i, **seg) for i in (0, 1, 1)]  # one repeat
    state = facts.fold([joined, started, *segs])  # type: ignore[list-item]
    out = facts.decide_close(state, recording_id=RID, tenant_id=TEN, now_ns=5)
    assert [type(e).__name__ for e in out] == ["TrackEnded", "ParticipantLeft", "CaptureClosed"]
    ended, left, closed = out
    assert isinstance(ended, captures.TrackEnded) and (ended.segments, ended.frames) == (2, 20)
    assert isinstance(left, captures.ParticipantLeft) and left.reason == "proxy restarted"
    assert isinstance(closed, captures.CaptureClosed)
    assert (closed.segments, closed.tracks) == (2, 1)
    assert ended.event_id == facts.track_ended_id(RID, "ana-s1-audio")
    # once closed, nothing more
    facts.evolve(state, closed)
    assert facts.decide_close(state, recording_id=RID, tenant_id=TEN, now_ns=6) == []
    # ended normally: only the close
    state2 = facts.fold([joined, started])  # type: ignore[list-item]
    state2.ended.add("ana-s1-audio")
    state2.left.add("s1")
    out2 = facts.decide_close(state2, recording_id=RID, tenant_id=TEN, now_ns=5)
    assert [type(e).__name__ for e in out2] == ["CaptureClosed"]


KEY = bytes(range(32))
FRAME = 2000  # bytes per frame: a few frames per 8 KiB chunk
TRACK = "ana-s1-audio"


def _crypt(tmp_path: Path) -> tuple[salvage.Crypt, Path]:
    rec_dir = tmp_path / TEN / RID
    tdir = rec_dir / "capture" / pseudonym(KEY, "ana") / pseudonym(KEY, TRACK)
    tdir.mkdir(parents=True)
    return salvage.Crypt(bytearray(KEY), RID, rec_dir), tdir


def _header(seq: int) -> SegmentHeader:
    return SegmentHeader(
        recording_id=RID,
        track_id=TRACK,
        kind="audio",
        codec="audio/opus",
        clock_rate=48000,
        channels=2,
        seq=seq,
        participant_id="ana",
        session_id="s1",
    )


def _write_partial(crypt: salvage.Crypt, tdir: Path, seq: int, frames: int, cut: int) -> int:
    """A segment as a writer killed -9 leaves it: the chunks it had sealed, the last one cut
    by ``cut`` bytes; returns how many frames lie whole in the chunks that still verify."""
    path = tdir / f"{seq:06d}.rgc"
    w = SegmentWriter(path, _header(seq), key=crypt.key, name=crypt.name(path))
    for i in range(frames):
        w.append(Frame(i * 960, 1000 + i, True, bytes([i]) * FRAME))
    w._fh.close()  # killed: the chunk being filled never reaches the disk
    data = w.part_path.read_bytes()
    w.part_path.write_bytes(data[: len(data) - cut])
    sealed = (len(data) - chunkcrypt.HEADER_SIZE) // (SEGMENT_CHUNK + chunkcrypt.TAG_SIZE)
    whole = sealed - (1 if cut else 0)
    head = len(MAGIC) + 4 + len(msgspec.json.encode(_header(seq)))
    return max(0, (whole * SEGMENT_CHUNK - head) // (21 + FRAME))


def test_finish_partials_keeps_complete_records(tmp_path: Path) -> None:
    crypt, tdir = _crypt(tmp_path)
    expected = _write_partial(crypt, tdir, 0, 10, cut=20)  # the last sealed chunk cut short
    assert expected >= 2
    empty = tdir / "000001.rgc.part"
    empty.write_bytes(b"")  # nothing was flushed
    assert salvage.finish_partials(tdir, crypt) == expected
    assert sorted(p.name for p in tdir.iterdir()) == ["000000.rgc"]
    final = tdir / "000000.rgc"
    header, frames = read_segment(final, key=KEY, recording_id=RID, name=crypt.name(final))
    got = list(frames)
    assert header.seq == 0 and len(got) == expected
    assert got[-1].data == bytes([expected - 1]) * FRAME
    assert b"OpusHead" not in final.read_bytes() and MAGIC not in final.read_bytes()
    # The rewrite is a whole file: a strict reader verifies it to its last chunk.
    with final.open("rb") as fh:
        chunkcrypt.verify_stream(fh, KEY, recording_id=RID, name=crypt.name(final))


def test_finish_partials_resumes_an_interrupted_salvage(tmp_path: Path) -> None:
    crypt, tdir = _crypt(tmp_path)
    expected = _write_partial(crypt, tdir, 3, 12, cut=0)
    part = tdir / "000003.rgc.part"
    salvaged = tdir / "000003.rgc.salvage"
    part.rename(salvaged)
    (tdir / "000003.rgc.part").write_bytes(b"RGENC\n")  # the rewrite a crash cut short
    assert salvage.finish_partials(tdir, crypt) == expected
    assert sorted(p.name for p in tdir.iterdir()) == ["000003.rgc"]


def test_a_partial_segment_under_another_key_recovers_nothing(tmp_path: Path) -> None:
    crypt, tdir = _crypt(tmp_path)
    _write_partial(crypt, tdir, 0, 10, cut=0)
    other = salvage.Crypt(bytearray(reversed(KEY)), RID, crypt.rec_dir)
    assert salvage.finish_partials(tdir, other) == 0


def test_recover_recording_lists_unpublished_segments(tmp_path: Path) -> None:
    crypt, tdir = _crypt(tmp_path)
    _write_partial(crypt, tdir, 0, 9, cut=0)
    expected = _write_partial(crypt, tdir, 1, 9, cut=7)
    found = salvage.recover_recording(crypt.rec_dir, {(TRACK, 0)}, crypt)
    assert [(f.header.seq, f.stats.frames) for f in found] == [(1, expected)]
    assert found[0].participant_id == "ana"
    assert found[0].rel_path == crypt.name(tdir / "000001.rgc")
    assert "ana" not in found[0].rel_path
    state = facts.CaptureState()
    events = salvage.salvage_events(state, found, recording_id=RID, tenant_id=TEN)
    assert [type(e).__name__ for e in events] == ["TrackStarted", "SegmentWritten"]
    assert isinstance(events[0], captures.TrackStarted) and events[0].session_id == "s1"
    assert events[1].event_id == facts.segment_id(RID, TRACK, 1)
    # The event's hash is the plaintext's, not the stored bytes'.
    assert isinstance(events[1], captures.SegmentWritten)
    assert events[1].sha256 != found[0].stored_sha256


def _rtp(seq: int, ts: int, data: bytes = b"x", marker: int = 0) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=ts, marker=marker)
    p._data = data  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return p


def test_video_jitter_flushes_the_last_whole_frame() -> None:
    jb = capture.VideoJitter(JitterBuffer(capacity=512, is_video=True), lambda _: None)
    assert jb.flush() is None
    for seq, ts, data, marker in [(10, 0, b"a", 0), (11, 0, b"b", 1), (12, 3000, b"c", 0)]:
        jb.add(_rtp(seq, ts, data, marker))
    assert jb.flush() is None  # frame 3000 has no packet with the marker bit: not whole
    jb.add(_rtp(13, 3000, b"d", 1))  # now it is (aiortc holds it until a next frame begins)
    frame = jb.flush()
    assert frame is not None and (frame.data, frame.timestamp) == (b"cd", 3000)
    assert jb.flush() is None


def test_video_jitter_gives_up_a_lost_packet_after_the_wait() -> None:
    clock = [0.0]
    gaps: list[bool] = []
    jb = capture.VideoJitter(
        JitterBuffer(capacity=512, is_video=True),
        gaps.append,
        max_hole_wait_s=1.0,
        clock=lambda: clock[0],
    )
    out: list[int] = []

    def feed(seq: int, ts: int) -> None:
        _, frame = jb.add(_rtp(seq, ts))
        if frame is not None:
            out.append(frame.timestamp)

    # two packets per frame, seq near the 16-bit wrap; packet 65535+3 (frame 1's second) is lost
    base = 65534
    feed(base, 0)
    feed(base + 1, 0)
    feed(base + 2, 3000)
    for i in range(4, 12):
        clock[0] += 0.1
        feed(base + i, 3000 * (i // 2))
    assert out == [0] and gaps == []  # frame 1 is incomplete: everything behind it waits
    clock[0] += 0.5  # the hole is now 1.3 s old
    feed(base + 12, 18000)
    assert gaps == [False]  # given up: frame 1 dropped, the capture told
    assert out == [0, 6000]
    for i in range(13, 20):
        feed(base + i, 3000 * (i // 2))
    assert out == [0, 6000, 9000, 12000, 15000, 18000, 21000, 24000]
    # a packet that NACK/RTX brings back in time is no hole
    feed(base + 21, 30000)
    clock[0] += 0.5
    feed(base + 20, 27000)
    feed(base + 22, 33000)
    assert gaps == [False] and out[-2:] == [27000, 30000]


def test_opus_passthrough_hands_on_every_packet_and_drops_late_ones() -> None:
    jb = capture.OpusPassthrough()
    got = []
    for seq in (65534, 65535, 1, 0, 2, 2):  # 0 arrives late, 2 twice
        _, frame = jb.add(_rtp(seq, seq * 960))
        got.append(None if frame is None else frame.timestamp // 960)
    assert got == [65534, 65535, 1, None, 2, None] and jb.late == 2


def test_ntp_and_rtp_time() -> None:
    # 2026-11-29T12:00:00.5Z in NTP: seconds since 1900 . half a second
    unix_s = 1795953600
    ntp = ((unix_s + media.NTP_UNIX_OFFSET_S) << 32) | (1 << 31)
    assert media.ntp_to_unix_ns(ntp) == unix_s * 1_000_000_000 + 500_000_000
    # the sender's clock started near the top of the 32-bit range and has wrapped since
    origin = 0xFFFF_FF00
    assert media.unwrap_rtp_ts(0xFFFF_FF10, origin, near=0) == 0x10
    assert media.unwrap_rtp_ts(0x0000_0100, origin, near=0x150) == 0x200  # after the wrap
    assert media.unwrap_rtp_ts(0xFFFF_FE00, origin, near=0x10) == -0x100  # before the origin
    later = 5 * (1 << 32) + 0x300  # five wraps on
    assert media.unwrap_rtp_ts(0x200, origin, near=later - 50) == later
