"""Many publishers joining one recording in the same instant, and what of their media was kept.

The publishers run in a process of their own (``python -m tests.proxy.join '<config>'``), all
``start()``ed in one ``asyncio.gather`` (no batching), with pre-encoded VP8/Opus looped by
``PacketTrack`` (no live encoding: 16 VP8 encoders would starve this machine). Each one counts,
per track, what it handed aiortc (``PacketTrack.frames``), what went on the wire (its DTLS
transport's ``_send_rtp`` wrapped: media SSRC packets, frames by RTP marker / one per Opus
packet, and whether the first frame on the wire was a key frame) and aiortc's own
``outbound-rtp`` ``packetsSent``.

``count_written`` reads back (decrypts) what the proxy wrote for each participant's track, and
``Shortfall`` puts the two side by side. Used by ``test_first_second.py`` and
``bench/bench_join.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.capture_format import read_segment
from shared.embedded import python_env
from shared.events import AnyEvent, captures
from shared.procs import die_with_parent

REPO = Path(__file__).resolve().parent.parent.parent
# Media stops this long before the DELETEs, as a client that leaves: long enough for the frames
# the tracks already gave out to be on the wire (counted then), too short for a proxy that is
# behind to have read them.
TAIL_S = 0.3
VIDEO_STEP, AUDIO_STEP = 3000, 960  # RTP ticks per frame of the pre-encoded media


class WireCounter:
    """Counts what one publisher's DTLS transport actually put on the wire, per media SSRC."""

    def __init__(self) -> None:
        self.ssrc: dict[str, int] = {}
        self.packets = {"video": 0, "audio": 0}
        self.frames = {"video": 0, "audio": 0}
        self.first_is_keyframe: bool | None = None
        self.first_sent_at: float | None = None  # time.time() of the first media packet
        self.sent_at: dict[str, list[float]] = {"video": [], "audio": []}  # first, last
        self._wrapped: set[int] = set()

    def __call__(self, pc: Any) -> None:  # Publisher(setup=...): before the offer
        for t in pc.getTransceivers():
            self.ssrc[t.kind] = t.sender._ssrc
            self._wrap(t.sender.transport)

    def _wrap(self, transport: Any) -> None:
        if id(transport) in self._wrapped:
            return
        self._wrapped.add(id(transport))
        send = transport._send_rtp

        async def counting_send(data: bytes) -> None:
            await send(data)  # raises if DTLS is not connected: then nothing was sent
            self._count(data)

        transport._send_rtp = counting_send

    def _count(self, data: bytes) -> None:
        from aiortc.rtp import RtpPacket, is_rtcp

        if is_rtcp(data):
            return
        p = RtpPacket.parse(data)
        kind = next((k for k, s in self.ssrc.items() if s == p.ssrc), None)
        if kind is None:
            return  # RTX retransmissions: repairs, not frames
        if self.first_sent_at is None:
            self.first_sent_at = time.time()
        self.packets[kind] += 1
        at = self.sent_at[kind]
        at[min(len(at), 1) :] = [time.time()]  # [first, last]
        if kind == "audio":
            self.frames["audio"] += 1
            return
        if self.first_is_keyframe is None:
            # VP8 (RFC 7741): payload descriptor, then the frame's first byte, bit 0 = P
            # (0 for a key frame); the descriptor's X/I/L/T/K bits say how long it is
            b = p.payload
            i = 1
            if b[0] & 0x80:
                x = b[1]
                i = 2
                if x & 0x80:
                    i += 2 if b[i] & 0x80 else 1
                i += 1 if x & 0x40 else 0
                i += 1 if x & 0x30 else 0
            self.first_is_keyframe = bool(b[0] & 0x10) and not b[i] & 0x01
        if p.marker:
            self.frames["video"] += 1


async def publish_together(config: dict[str, Any]) -> list[dict[str, Any]]:
    from resguardo.packet_media import (
        AUDIO_TICKS,
        VIDEO_TICKS,
        PacketTrack,
        load_media,
        packets_sent,
        send_then_pause,
    )
    from resguardo.publisher import Publisher

    media = load_media(Path(config["media"]))
    pubs, counters = [], []
    for url, token, participant in config["targets"]:
        counter = WireCounter()
        pubs.append(
            Publisher(
                url,
                token,
                participant=participant,
                ca_file=Path(config["ca_file"]),
                video_track=PacketTrack("video", media["video"], VIDEO_TICKS, 90_000),
                audio_track=PacketTrack("audio", media["audio"], AUDIO_TICKS, 48_000),
                connect_timeout=60,
                setup=counter,
            )
        )
        counters.append(counter)
    t0 = time.time()
    # every one at once: the storm of simultaneous offers and DTLS handshakes under test
    started = await asyncio.gather(*(p.start() for p in pubs), return_exceptions=True)
    connected_s = time.time() - t0
    print("connected", flush=True)
    await send_then_pause((t for p in pubs for t in (p.video, p.audio)), config["seconds"], TAIL_S)
    reports = []
    for p, counter, error in zip(pubs, counters, started, strict=True):
        stats_packets = await packets_sent([p.pc])
        reports.append(
            {
                "participant": p.participant,
                "error": repr(error) if isinstance(error, BaseException) else "",
                "handed": {"video": p.video.frames, "audio": p.audio.frames},  # type: ignore[union-attr]
                "wire_frames": counter.frames,
                "wire_packets": counter.packets,
                "stats_packets": stats_packets,
                "first_is_keyframe": counter.first_is_keyframe,
                "first_sent_after_s": (counter.first_sent_at or t0) - t0,
                "sent_at": counter.sent_at,
            }
        )
    results = await asyncio.gather(*(p.stop() for p in pubs), return_exceptions=True)
    for report, result in zip(reports, results, strict=True):
        report["deleted"] = bool(getattr(result, "deleted", False))
    print(json.dumps({"connected_s": connected_s, "publishers": reports}), flush=True)
    return reports


async def run_publishers(
    media: Path, ca_file: Path, targets: list[tuple[str, str, str]], seconds: float
) -> dict[str, Any]:
    """Run the publishers' process until it is done; returns what it reported."""
    config = {"media": str(media), "ca_file": str(ca_file), "targets": targets, "seconds": seconds}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.proxy.join",
        json.dumps(config),
        cwd=REPO,
        env={**python_env(), "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent(),  # a killed test leaves no publishers behind
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        if line.strip() != b"connected":
            raise AssertionError(f"the publishers' process said {line!r}")
        out = await asyncio.wait_for(proc.stdout.readline(), seconds + 90)
        await asyncio.wait_for(proc.wait(), 60)
        return dict(json.loads(out))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def joined_call(
    js: Any, proxy: Any, media: Path, *, publishers: int, seconds: float, load: int
) -> tuple[dict[str, Any], list[AnyEvent], Any]:
    """Start ``proxy``, have ``publishers`` join one new recording together while ``load`` busy
    processes compete for the CPU, stop the recording once they left, stop the proxy; returns
    the publishers' report, the recording's capture history and the recording."""
    from .conftest import history, start_recording, stop_recording, wait_for_event

    await proxy.start()
    try:
        rec = await start_recording(js)
        targets = [(proxy.whip_url(rec.rid), rec.token, f"p{i:02d}") for i in range(publishers)]
        with cpu_load(load):
            report = await run_publishers(media, proxy.ca_file, targets, seconds)
        await stop_recording(js, rec)
        await wait_for_event(js, f"captures.{rec.rid}.closed", timeout=60)
        events = await history(js, rec.rid)
    finally:
        proxy.process.stop()
    return report, events, rec


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """A loaded machine: ``processes`` busy loops competing for the CPU with the proxy and the
    publishers (at their priority) while the block runs; each stopped by its pid."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=die_with_parent())
        for _ in range(processes)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


@dataclass
class Written:
    """What the proxy wrote for one track, read back from its segment files."""

    frames: int = 0
    keyframes: int = 0
    first_is_keyframe: bool = False
    holes: int = 0  # frames missing between the first and the last one written (by RTP time)
    event_frames: int = 0  # what its segment_written events say
    first_wallclock_ns: int = 0
    last_wallclock_ns: int = 0
    # video: where the first and last frame written are in the looped media (its frames are
    # all different): 0 is the publisher's first frame, its key frame
    first_index: int = -1
    last_index: int = -1


def count_written(
    rec_dir: Path,
    events: list[AnyEvent],
    key: bytes | bytearray,
    media: dict[str, list[bytes]] | None = None,
) -> dict[tuple[str, str], Written]:
    """Per (participant_id, kind): the frames in the segment files, decrypted."""
    out: dict[tuple[str, str], Written] = {}
    video_index = {data: i for i, data in enumerate(media["video"])} if media else {}
    segs = sorted(
        (e for e in events if isinstance(e, captures.SegmentWritten)),
        key=lambda s: (s.track_id, s.seq),
    )
    last_ts: dict[tuple[str, str], int] = {}
    for seg in segs:
        k = (seg.participant_id, seg.kind)
        w = out.setdefault(k, Written())
        w.event_frames += seg.frames
        step = VIDEO_STEP if seg.kind == "video" else AUDIO_STEP
        _, frames = read_segment(
            rec_dir / seg.path, key=key, recording_id=seg.recording_id, name=seg.path
        )
        for f in frames:
            if w.frames == 0:
                w.first_is_keyframe = f.keyframe
                w.first_wallclock_ns = f.wallclock_ns
                w.first_index = video_index.get(f.data, -1)
            elif k in last_ts:
                w.holes += max(0, round((f.rtp_ts - last_ts[k]) / step) - 1)
            w.last_wallclock_ns = f.wallclock_ns
            w.last_index = video_index.get(f.data, -1)
            last_ts[k] = f.rtp_ts
            w.frames += 1
            w.keyframes += f.keyframe
    return out


@dataclass
class Shortfall:
    participant: str
    kind: str
    handed: int  # frames the publisher handed aiortc
    sent: int  # frames that went on the wire, from the first (key) frame
    written: int
    holes: int
    first_written_is_keyframe: bool

    @property
    def lost(self) -> int:
        return self.sent - self.written


def shortfalls(report: dict[str, Any], written: dict[tuple[str, str], Written]) -> list[Shortfall]:
    out = []
    for pub in report["publishers"]:
        for kind in ("video", "audio"):
            w = written.get((pub["participant"], kind), Written())
            out.append(
                Shortfall(
                    participant=pub["participant"],
                    kind=kind,
                    handed=pub["handed"][kind],
                    sent=pub["wire_frames"][kind],
                    written=w.frames,
                    holes=w.holes,
                    first_written_is_keyframe=w.first_is_keyframe or kind == "audio",
                )
            )
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.proxy.join '<json config>'")
    asyncio.run(publish_together(json.loads(sys.argv[1])))
