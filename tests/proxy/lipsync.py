"""A recorded call of flash-and-beep senders (``resguardo.flashbeep``) into the real proxy, and
the offsets between flashes and beeps in a decoded file: for ``test_lip_sync.py`` and
``bench/bench_lipsync.py``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext

from resguardo.flashbeep import BeepAudioTrack, FlashVideoTrack, flash_and_beep, past_last_flash
from resguardo.publisher import Publisher
from shared.events import AnyEvent

from ..transcoder.media_probe import beep_onsets, flash_times
from .conftest import Proxy, Recording, history, start_recording, stop_recording, wait_for_event
from .join import cpu_load


@dataclass(frozen=True)
class Sender:
    participant: str
    audio_delay_s: float = 0.0
    video_clock_ppm: float = 0.0


@dataclass
class Call:
    rec: Recording
    events: list[AnyEvent]  # the recording's capture history, closed
    flashes_shown: dict[str, int]  # participant -> flashes its camera showed


def pair(flashes: list[float], beeps: list[float]) -> list[float]:
    """Beep minus flash for every flash, each beep the nearest one (within 0.5 s)."""
    out = []
    for flash in flashes:
        nearest = min(beeps, key=lambda b: abs(b - flash), default=None)
        assert nearest is not None and abs(nearest - flash) < 0.5, (flash, beeps)
        out.append(nearest - flash)
    return out


def offsets_in(path: Path) -> list[float]:
    """Beep minus flash (s) for every flash of a decoded file."""
    return pair(flash_times(path), beep_onsets(path))


async def stop(pub: Publisher) -> None:
    """End a flash-and-beep sender with no flash cut in half (its tracks paused after the last),
    what it sent given a second to be encoded, sent and taken in."""
    video, audio = pub.video, pub.audio
    if isinstance(video, FlashVideoTrack) and isinstance(audio, BeepAudioTrack) and pub.connected:
        await asyncio.wait_for(past_last_flash(video, audio), 30)
        await asyncio.sleep(1.0)
    await pub.stop()


async def flash_call(
    js: JetStreamContext, proxy: Proxy, senders: list[Sender], seconds: float, *, busy: bool
) -> Call:
    """One recording: every sender joins together and sends for ``seconds`` (another process
    keeping a core busy if ``busy``); returns once the capture is closed."""
    rec = await start_recording(js)
    cameras: dict[str, FlashVideoTrack] = {}
    pubs = []
    for s in senders:
        video, audio = flash_and_beep(
            audio_delay_s=s.audio_delay_s, video_clock_ppm=s.video_clock_ppm
        )
        cameras[s.participant] = video
        pubs.append(
            Publisher(
                proxy.whip_url(rec.rid),
                rec.token,
                participant=s.participant,
                ca_file=proxy.ca_file,
                video_track=video,
                audio_track=audio,
                connect_timeout=60,
            )
        )
    with cpu_load(1 if busy else 0):  # another process keeping one core busy
        try:
            await asyncio.gather(*(p.start() for p in pubs))
            await asyncio.sleep(seconds)
        finally:
            await asyncio.gather(*(stop(p) for p in pubs), return_exceptions=True)
    await stop_recording(js, rec)
    await wait_for_event(js, f"captures.{rec.rid}.closed", timeout=120)
    return Call(rec, await history(js, rec.rid), {p: v.flashes for p, v in cameras.items()})
