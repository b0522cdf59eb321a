"""A publisher's camera and microphone that flash and beep at the same instants: to measure lip
sync on what comes out, decoded, not on our own events.

Both tracks count from one shared start (``FlashClock``): video frame ``n`` shows the picture of
instant ``n / fps``; audio sample ``j`` is the sound of instant ``audio_delay_s + j / 48000``.
Every ``period_s`` (from the second period on) the picture turns white and a 1 kHz tone plays,
both for ``flash_s``. Flash instants fall on frame instants (``period_s`` is a whole number of
frames), so a flash's first white frame *is* its instant and the beep's first loud sample is too.

Faults a real sender has, on purpose:

- ``audio_delay_s``: the microphone's first frame comes that long after the camera's;
- ``video_clock_ppm``: the camera's RTP clock runs fast by that much (its timestamps advance
  ``1 + ppm/1e6`` times faster than the wall clock), as a cheap camera's crystal does.

The tracks hand aiortc raw frames (aiortc encodes VP8 and Opus itself, as a browser would: its
encoder's delay is part of what is measured). Frames are flat, so encoding them costs little.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
from aiortc import MediaStreamTrack

AUDIO_RATE = 48_000
AUDIO_SAMPLES = 960  # 20 ms
VIDEO_RATE = 90_000
PERIOD_S = 2.0
FLASH_S = 0.1
TONE_HZ = 1000.0


class FlashClock:
    """The instant both tracks count from: set by whichever track the sender asks first."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.paused = asyncio.Event()  # set: both tracks hand out nothing more (the sender waits)

    def started(self) -> float:
        if self.start is None:
            self.start = time.time()
        return self.start


def in_flash(t: float, period_s: float = PERIOD_S, flash_s: float = FLASH_S) -> bool:
    """Whether instant ``t`` (s from the start) is inside a flash (from the second period on)."""
    k = math.floor(t / period_s + 1e-9)
    return k >= 1 and t - k * period_s < flash_s - 1e-9


async def _until(clock: FlashClock, when: float) -> None:
    wait = when - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    if clock.paused.is_set():
        await asyncio.Event().wait()  # never: the sender waits until it is stopped


class FlashVideoTrack(MediaStreamTrack):
    """Dark frames, white during each flash; ``frames`` counts what was handed to the encoder."""

    kind = "video"

    def __init__(
        self,
        clock: FlashClock,
        *,
        fps: int = 30,
        width: int = 320,
        height: int = 240,
        clock_ppm: float = 0.0,
        period_s: float = PERIOD_S,
    ) -> None:
        super().__init__()
        if round(period_s * fps) != period_s * fps:
            raise ValueError("the flash period must be a whole number of frames")
        self.clock, self.fps, self.clock_ppm, self.period_s = clock, fps, clock_ppm, period_s
        self.width, self.height = width, height
        self.frames = 0
        self.flashes = 0

    @property
    def content_s(self) -> float:
        """The instant (s from the start) up to which pictures were handed to the encoder."""
        return self.frames / self.fps

    def _picture(self, bright: bool) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, value in zip(frame.planes, (235 if bright else 16, 128, 128), strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        return frame

    async def recv(self) -> av.VideoFrame:
        n = self.frames
        await _until(self.clock, self.clock.started() + n / self.fps)
        bright = in_flash(n / self.fps, self.period_s)
        if bright and not in_flash((n - 1) / self.fps, self.period_s):
            self.flashes += 1
        frame = self._picture(bright)
        ticks = VIDEO_RATE // self.fps
        frame.pts = round(n * ticks * (1 + self.clock_ppm * 1e-6))
        frame.time_base = fractions.Fraction(1, VIDEO_RATE)
        self.frames += 1
        return frame


class BeepAudioTrack(MediaStreamTrack):
    """Silence, a 1 kHz tone during each flash; mono s16 at 48 kHz in 20 ms frames."""

    kind = "audio"

    def __init__(
        self, clock: FlashClock, *, delay_s: float = 0.0, period_s: float = PERIOD_S
    ) -> None:
        super().__init__()
        self.clock, self.delay_s, self.period_s = clock, delay_s, period_s
        self.frames = 0

    @property
    def content_s(self) -> float:
        """The instant (s from the start) up to which sound was handed to the encoder."""
        return self.delay_s + self.frames * AUDIO_SAMPLES / AUDIO_RATE

    async def recv(self) -> av.AudioFrame:
        n = self.frames
        first = self.delay_s + n * AUDIO_SAMPLES / AUDIO_RATE
        await _until(self.clock, self.clock.started() + first)
        samples = bytearray(AUDIO_SAMPLES * 2)
        span = AUDIO_SAMPLES / AUDIO_RATE
        quiet = not (in_flash(first, self.period_s) or in_flash(first + span, self.period_s))
        for j in range(0 if quiet else AUDIO_SAMPLES):
            t = first + j / AUDIO_RATE
            if in_flash(t, self.period_s):
                value = int(12_000 * math.sin(2 * math.pi * TONE_HZ * t))
                samples[2 * j : 2 * j + 2] = value.to_bytes(2, "little", signed=True)
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(bytes(samples))
        frame.pts = n * AUDIO_SAMPLES
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.frames += 1
        return frame


async def past_last_flash(
    video: FlashVideoTrack, audio: BeepAudioTrack, *, margin_s: float = 0.3
) -> None:
    """Wait until both tracks have handed over what follows the latest flash either began, and
    ``margin_s`` more, then pause both: a sender stopped after that ends with every flash whole
    in both tracks (under load, one track's sender can run a second behind the other's)."""
    while True:
        latest = max(video.content_s, audio.content_s)
        k = math.floor(latest / video.period_s + 1e-9)
        if min(video.content_s, audio.content_s) >= k * video.period_s + FLASH_S + margin_s:
            video.clock.paused.set()
            return
        await asyncio.sleep(0.05)


def flash_and_beep(
    *, audio_delay_s: float = 0.0, video_clock_ppm: float = 0.0
) -> tuple[FlashVideoTrack, BeepAudioTrack]:
    """A camera and a microphone of one sender (one clock), for ``Publisher(video_track=...,
    audio_track=...)``."""
    clock = FlashClock()
    return (
        FlashVideoTrack(clock, clock_ppm=video_clock_ppm),
        BeepAudioTrack(clock, delay_s=audio_delay_s),
    )
