"""Pre-encoded media for many publishers at once: VP8 (640x360, 30 fps, ~1 Mbit/s, a key frame
every 2 s) and Opus (20 ms) packets encoded once with PyAV, and an aiortc track that loops them at
their real pace. aiortc only packetizes ``av.Packet``s, so a process can drive tens of publishers
(an aiortc VP8 encoder per publisher would cost the publishing process far more than the proxy).

Used by the proxy benchmarks (ours and Janus's) and by the tests of many publishers at once.
"""

from __future__ import annotations

import asyncio
import fractions
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import av
import msgspec
from aiortc import MediaStreamTrack, RTCPeerConnection

WIDTH, HEIGHT, FPS = 640, 360, 30
VIDEO_BITRATE = 1_000_000
LOOP_S = 4
NOISE_ROWS = 20
VIDEO_TICKS = 90_000 // FPS
AUDIO_TICKS = 960  # 20 ms at 48 kHz


# -- media, encoded once ---------------------------------------------------------------------


def encode_media(path: Path) -> dict[str, float]:
    """Write LOOP_S seconds of VP8 and Opus packets to ``path``; returns their bitrates."""
    video: list[bytes] = []
    enc: Any = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.framerate = fractions.Fraction(FPS, 1)
    enc.bit_rate = VIDEO_BITRATE
    enc.gop_size = 2 * FPS
    enc.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
    }
    ramp = bytes((i * 7) & 0xFF for i in range(2 * WIDTH + 64))
    for i in range(LOOP_S * FPS):
        # a moving ramp with a band of fresh noise: enough detail for libvpx to reach its
        # bitrate (pure noise overshoots it many times; a plain ramp stays under it)
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        y = frame.planes[0]
        rows = []
        for r in range(HEIGHT):
            if r < NOISE_ROWS:
                rows.append(os.urandom(y.line_size))
            else:
                offset = (r + 4 * i) % WIDTH
                rows.append(ramp[offset : offset + y.line_size])
        y.update(b"".join(rows))
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts = i
        video.extend(bytes(p) for p in enc.encode(frame))
    video.extend(bytes(p) for p in enc.encode(None))
    video = video[: LOOP_S * FPS]
    assert len(video) == LOOP_S * FPS and not video[0][0] & 1, "the loop must open on a key frame"

    audio: list[bytes] = []
    aenc: Any = av.CodecContext.create("libopus", "w")
    aenc.sample_rate, aenc.layout, aenc.format = 48_000, "mono", "s16"
    aenc.bit_rate = 32_000
    tone = bytes(range(256)) * (AUDIO_TICKS * 2 // 256 + 1)
    for i in range(LOOP_S * 50):
        af = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_TICKS)
        af.planes[0].update(tone[: AUDIO_TICKS * 2])
        af.sample_rate = 48_000
        af.pts = i * AUDIO_TICKS
        af.time_base = fractions.Fraction(1, 48_000)
        audio.extend(bytes(p) for p in aenc.encode(af))
    path.write_bytes(msgspec.msgpack.encode({"video": video, "audio": audio}))
    return {
        "video_kbit_s": sum(map(len, video)) * 8 / LOOP_S / 1000,
        "audio_kbit_s": sum(map(len, audio)) * 8 / (len(audio) * 0.02) / 1000,
    }


# -- the publisher process -------------------------------------------------------------------


class PacketTrack(MediaStreamTrack):
    """Loops pre-encoded packets at their real pace; ``pause()`` stops the flow."""

    def __init__(self, kind: str, packets: list[bytes], ticks: int, rate: int) -> None:
        super().__init__()
        self.kind = kind
        self.packets = packets
        self.ticks = ticks
        self.rate = rate
        self.period = ticks / rate
        self.frames = 0
        self._start: float | None = None
        self._paused = asyncio.Event()

    def pause(self) -> None:
        self._paused.set()

    async def recv(self) -> Any:
        if self._start is None:
            self._start = time.time()
        else:
            wait = self._start + self.frames * self.period - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        if self._paused.is_set():
            await asyncio.Event().wait()  # never: the sender waits until it is stopped
        packet = av.Packet(self.packets[self.frames % len(self.packets)])
        packet.pts = self.frames * self.ticks
        packet.time_base = fractions.Fraction(1, self.rate)
        self.frames += 1
        return packet


def load_media(path: Path) -> dict[str, list[bytes]]:
    """What ``encode_media`` wrote."""
    return msgspec.msgpack.decode(path.read_bytes(), type=dict[str, list[bytes]])


async def send_then_pause(tracks: Iterable[Any], seconds: float, tail_s: float) -> None:
    """Let ``tracks`` (``PacketTrack``s) send for ``seconds``, pause them all, then wait
    ``tail_s`` so that every frame they gave out is on the wire before anyone hangs up."""
    await asyncio.sleep(seconds)
    for track in tracks:
        track.pause()
    await asyncio.sleep(tail_s)


async def packets_sent(pcs: Iterable[RTCPeerConnection | None]) -> dict[str, int]:
    """RTP packets the peer connections' senders sent, by kind (aiortc's outbound-rtp stats)."""
    packets = {"video": 0, "audio": 0}
    for pc in pcs:
        for sender in pc.getSenders() if pc is not None else ():
            for st in (await sender.getStats()).values():
                if getattr(st, "type", "") == "outbound-rtp":
                    packets[st.kind] += st.packetsSent
    return packets
