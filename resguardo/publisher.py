"""A WHIP publisher (RFC 9725) made with aiortc: synthetic video and audio, for tests and demos.

Video is a moving diagonal-stripe pattern (yuv420p, 30 fps); audio a 48 kHz sine in 20 ms frames.
The offer is POSTed only after ICE gathering completes (aiortc has no trickle ICE); the proxy's
certificate is trusted only through ``ca_file`` when given.

    result = await publish(url, token, participant="ana", seconds=4, ca_file=ca)

    async with Publisher(url, token, participant="ana", ca_file=ca) as pub:
        ...  # media flows while the block runs; leaving it DELETEs the session
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AUDIO_PTIME, VideoStreamTrack
from yarl import URL

from shared.tls import client_context

AUDIO_RATE = 48000


class PublishError(Exception):
    """The WHIP server refused the session or media could not flow; the message says why."""


class PatternVideoTrack(VideoStreamTrack):
    """Moving diagonal stripes; counts the frames handed to the encoder."""

    def __init__(self, width: int = 640, height: int = 360) -> None:
        super().__init__()
        self.width, self.height = width, height
        period = 256
        self._row = bytes((i * 255 // period) & 0xFF for i in range(period)) * (
            (width // period) + 3
        )
        self._period = period
        self._chroma_u = bytes([96]) * ((width // 2) * (height // 2))
        self._chroma_v = bytes([160]) * ((width // 2) * (height // 2))
        self.frames = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        shift = (self.frames * 4) % self._period
        y_plane = frame.planes[0]
        stride = y_plane.line_size
        pad = bytes(stride - self.width)
        rows = (
            self._row[(shift + y) % self._period : (shift + y) % self._period + self.width] + pad
            for y in range(self.height)
        )
        y_plane.update(b"".join(rows))
        for plane, value in ((frame.planes[1], self._chroma_u), (frame.planes[2], self._chroma_v)):
            if plane.line_size == self.width // 2:
                plane.update(value)
            else:
                plane.update(bytes([value[0]]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.frames += 1
        return frame


class SineAudioTrack(MediaStreamTrack):
    """A 440 Hz sine at 48 kHz, mono s16, 20 ms per frame; counts frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self.samples = int(AUDIO_PTIME * AUDIO_RATE)
        self.frequency = frequency
        self.frames = 0
        self._start: float | None = None
        self._timestamp = 0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += self.samples
            wait = self._start + self._timestamp / AUDIO_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        n0 = self._timestamp
        pcm = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * self.frequency * (n0 + i) / AUDIO_RATE))
                for i in range(self.samples)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(pcm.tobytes())
        frame.pts = self._timestamp
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.frames += 1
        return frame


@dataclass
class PublishResult:
    location: str  # absolute URL of the WHIP session resource
    video_frames: int
    audio_frames: int
    connected: bool
    deleted: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> dict[str, int]:
        return {"video": self.video_frames, "audio": self.audio_frames}


def _prefer(transceiver: Any, kind: str, mime: str) -> None:
    caps = RTCRtpSender.getCapabilities(kind)
    chosen = [c for c in caps.codecs if c.mimeType.lower() == mime.lower()]
    if not chosen:
        raise PublishError(f"aiortc cannot send {mime}; choose VP8 or H264.")
    rtx = [c for c in caps.codecs if c.mimeType.lower() == f"{kind}/rtx"]
    transceiver.setCodecPreferences(chosen + rtx)


class Publisher:
    """One WHIP session: ``start()`` connects and media flows until ``stop()`` (DELETE)."""

    def __init__(
        self,
        whip_url: str,
        token: str,
        *,
        participant: str | None = None,
        ca_file: Path | None = None,
        video_codec: str = "VP8",
        video: bool = True,
        audio: bool = True,
        width: int = 640,
        height: int = 360,
        connect_timeout: float = 20.0,
        delete_timeout: float = 60.0,
        setup: Callable[[RTCPeerConnection], None] | None = None,
        video_track: MediaStreamTrack | None = None,
        audio_track: MediaStreamTrack | None = None,
    ) -> None:
        self.whip_url = whip_url
        self.token = token
        self.participant = participant
        self.ca_file = ca_file
        self.video_codec = video_codec
        self.connect_timeout = connect_timeout
        # The proxy answers DELETE once the session's last events are stored; if its bus is
        # down that can take long, and a caller (or a cancelled task) must not wait forever.
        self.delete_timeout = delete_timeout
        self.setup = setup  # called with the peer connection before the offer (tests: faults)
        # tracks given (e.g. pre-encoded media for the benchmark) replace the synthetic ones;
        # a ``frames`` attribute, if they have one, is reported as frames sent
        self.video: MediaStreamTrack | None = video_track or (
            PatternVideoTrack(width, height) if video else None
        )
        self.audio: MediaStreamTrack | None = audio_track or (SineAudioTrack() if audio else None)
        self.pc: RTCPeerConnection | None = None
        self.location = ""
        self.connected = False
        self.deleted = False
        self._http: aiohttp.ClientSession | None = None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def start(self) -> None:
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        connected = asyncio.Event()
        failed = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                connected.set()
            elif pc.connectionState in ("failed", "closed"):
                failed.set()

        if self.video is not None:
            t = pc.addTransceiver(self.video, direction="sendonly")
            _prefer(t, "video", f"video/{self.video_codec}")
        if self.audio is not None:
            t = pc.addTransceiver(self.audio, direction="sendonly")
            _prefer(t, "audio", "audio/opus")
        if self.setup is not None:
            self.setup(pc)
        await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
        offer = pc.localDescription.sdp

        ssl = client_context(self.ca_file) if self.whip_url.startswith("https") else False
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl))
        url = URL(self.whip_url)
        if self.participant is not None:
            url = url.update_query(participant=self.participant)
        async with self._http.post(
            url, data=offer, headers={**self._auth(), "Content-Type": "application/sdp"}
        ) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise PublishError(f"WHIP server answered {resp.status}: {body.strip()[:300]}")
            location = resp.headers.get("Location", "")
        self.location = str(URL(self.whip_url).join(URL(location)))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        waiters = [asyncio.create_task(connected.wait()), asyncio.create_task(failed.wait())]
        await asyncio.wait(
            waiters, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in waiters:
            task.cancel()
        if not connected.is_set():
            raise PublishError("Media did not connect to the WHIP server (ICE/DTLS failed).")
        self.connected = True

    async def stop(self, *, delete: bool = True) -> PublishResult:
        """DELETE the session (unless ``delete=False``) and close the peer connection."""
        try:
            if delete and self.location and self._http is not None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self._http.delete(
                        self.location,
                        headers=self._auth(),
                        timeout=aiohttp.ClientTimeout(total=self.delete_timeout),
                    ) as resp:
                        self.deleted = resp.status in (200, 204)
        finally:
            if self.pc is not None:
                await self.pc.close()
            if self._http is not None:
                await self._http.close()
        return self.result()

    def result(self) -> PublishResult:
        return PublishResult(
            location=self.location,
            video_frames=int(getattr(self.video, "frames", 0)),
            audio_frames=int(getattr(self.audio, "frames", 0)),
            connected=self.connected,
            deleted=self.deleted,
        )

    async def __aenter__(self) -> Publisher:
        try:
            await self.start()
        except BaseException:
            await self.stop(delete=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def publish(
    whip_url: str,
    token: str,
    *,
    participant: str,
    seconds: float,
    ca_file: Path | None,
    video_codec: str = "VP8",
    on_progress: Callable[[float], None] | None = None,
) -> PublishResult:
    """Publish synthetic audio+video for ``seconds``, then end the session with DELETE."""
    async with Publisher(
        whip_url, token, participant=participant, ca_file=ca_file, video_codec=video_codec
    ) as pub:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (elapsed := loop.time() - start) < seconds:
            if on_progress is not None:
                on_progress(min(elapsed / seconds, 1.0))
            await asyncio.sleep(min(0.25, seconds - elapsed))
        if on_progress is not None:
            on_progress(1.0)
    return pub.result()
