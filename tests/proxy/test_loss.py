"""Packet loss between publisher and proxy.

The publisher's DTLS transport drops packets before encryption (the proxy is unmodified real code
in its own process): 5% of all RTP at random (retransmissions too), every packet of the first
video frame (so the proxy first sees a delta frame and must ask for a key frame), and one video
packet for good, with all of its retransmissions (so NACK/RTX cannot repair it and the capture
must skip the hole and ask for a key frame). The capture must still decode without a single
error, the loss must be reported in the track's event, and key frames must have been requested.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket, is_rtcp
from nats.js import JetStreamContext

from resguardo.publisher import Publisher
from shared.embedded import NatsServer
from shared.events import captures
from tests import scrape

from .conftest import (
    history,
    make_proxy,
    recording_key,
    start_recording,
    stop_recording,
    wait_for_event,
)
from .media_check import assert_files_match, decode_segments, segments_of

SHARE = 0.05
SPARED = 30  # the first packets of each SSRC pass, so RTCP's count starts where drops start
HOLE_AT = 150  # the video packet lost for good (with every retransmission of it)


class Lossy:
    """Wraps the publisher's transport send path; counts what it sent and dropped per SSRC."""

    def __init__(self, seed: int = 7) -> None:
        self.random = random.Random(seed)
        self.sent: Counter[int] = Counter()
        self.dropped: Counter[int] = Counter()
        self.first_frame_dropped = 0
        self.hole_retransmissions = 0
        self.active = True
        self.video = self.video_rtx = self.audio = -1
        self._first_ts: int | None = None
        self._hole_seq: int | None = None
        self._wrapped: set[int] = set()

    def __call__(self, pc: RTCPeerConnection) -> None:
        for t in pc.getTransceivers():
            if t.kind == "video":
                self.video, self.video_rtx = t.sender._ssrc, t.sender._rtx_ssrc
            else:
                self.audio = t.sender._ssrc
            self.wrap(t.sender.transport)

    def wrap(self, transport: Any) -> None:
        if id(transport) in self._wrapped:
            return
        self._wrapped.add(id(transport))
        send = transport._send_rtp

        async def lossy_send(data: bytes) -> None:
            if is_rtcp(data) or not self.drop(RtpPacket.parse(data)):
                await send(data)

        transport._send_rtp = lossy_send

    def drop(self, p: RtpPacket) -> bool:
        self.sent[p.ssrc] += 1
        n = self.sent[p.ssrc]
        if p.ssrc == self.video:
            if self._first_ts is None:
                self._first_ts = p.timestamp
            if p.timestamp == self._first_ts:
                self.first_frame_dropped += 1
                return self._dropped(p)
            if n == HOLE_AT:
                self._hole_seq = p.sequence_number
                return self._dropped(p)
        if p.ssrc == self.video_rtx and int.from_bytes(p.payload[:2], "big") == self._hole_seq:
            self.hole_retransmissions += 1
            return self._dropped(p)
        if self.active and n > SPARED and self.random.random() < SHARE:
            return self._dropped(p)
        return False

    def _dropped(self, p: RtpPacket) -> bool:
        self.dropped[p.ssrc] += 1
        return True


async def test_loss_is_survived_reported_and_repaired_with_keyframes(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path
) -> None:
    # long segments: no key frame is asked for at rotation, so every request counted is for loss
    proxy = make_proxy(tmp_path, nats_server, segment_seconds="60")
    await proxy.start()
    try:
        rec = await start_recording(js)
        lossy = Lossy()
        url = proxy.whip_url(rec.rid)
        async with Publisher(
            url, rec.token, participant="ana", ca_file=proxy.ca_file, setup=lossy
        ) as pub:
            await asyncio.sleep(7)
            lossy.active = False  # a clean last second: every drop is followed by a packet
            await asyncio.sleep(1)
        sent = pub.result()
        await stop_recording(js, rec)
        await wait_for_event(js, f"captures.{rec.rid}.closed")
        events = await history(js, rec.rid)
        base = scrape.health_url(proxy.data_dir / "run", "proxy")
        metrics = await asyncio.to_thread(scrape.scrape, base)
    finally:
        proxy.process.stop()

    rec_dir = proxy.rec_dir(rec)
    key = await recording_key(js, rec)
    assert assert_files_match(rec_dir, events, key) == 2
    ended = {e.track_id.rsplit("-", 1)[1]: e for e in events if isinstance(e, captures.TrackEnded)}
    video = decode_segments(rec_dir, segments_of(events, "video"), "vp8", key)
    audio = decode_segments(rec_dir, segments_of(events, "audio"), "opus", key)
    print(f"sent {dict(lossy.sent)} dropped {dict(lossy.dropped)}")
    print(f"first frame dropped {lossy.first_frame_dropped} packets, ", end="")
    print(f"hole retransmissions dropped {lossy.hole_retransmissions}")
    print(f"publisher frames {sent.frames}; video {video}; audio {audio}")
    print(f"ended {ended}")

    # what was dropped is what RTCP counts as lost on the media SSRCs (RFC 3550 A.3): drops
    # before the first packet the proxy received are not losses it can see
    assert lossy.first_frame_dropped > 0 and lossy.dropped[lossy.video_rtx] >= 1
    assert ended["video"].packets_lost == lossy.dropped[lossy.video] - lossy.first_frame_dropped
    assert ended["audio"].packets_lost == lossy.dropped[lossy.audio] > 0
    # the first frame the proxy saw was a delta frame, and one hole was never repaired: a key
    # frame was asked for each time
    assert ended["video"].keyframe_requests >= 2
    assert ended["audio"].keyframe_requests == 0
    # it all decodes, from a key frame on
    assert video.errors == 0 and video.keyframe_first and video.frames_out == video.frames_in
    assert audio.errors == 0 and audio.frames_out == audio.frames_in
    # audio: each received packet is a frame (nothing beyond the dropped packets is lost)
    received_audio = lossy.sent[lossy.audio] - lossy.dropped[lossy.audio]
    assert received_audio - 5 <= audio.frames_in <= received_audio, (audio, received_audio)
    # video: NACK/RTX repaired the random loss; what is missing are the frames until the key
    # frames that followed the unrepaired loss
    assert ended["video"].frames == video.frames_in
    assert 0.7 * sent.video_frames <= video.frames_in < sent.video_frames, (video, sent)

    # The proxy's metrics say the same: packets lost as RTCP counts them, the unrepaired hole as
    # a gap, the delta frames before the first key frame and after the hole as frames lost.
    for kind in ("audio", "video"):
        lost = metrics.value("resguardo_proxy_packets_lost_total", kind=kind)
        assert lost == ended[kind].packets_lost, kind
        assert metrics.value("resguardo_proxy_frames_total", kind=kind) == ended[kind].frames
    assert metrics.value("resguardo_proxy_video_gaps_total") >= 1
    frames_lost = metrics.named("resguardo_proxy_frames_lost_total")
    by_reason = {dict(k)["reason"]: v for k, v in frames_lost.items() if dict(k)["kind"] == "video"}
    assert by_reason["no_keyframe"] >= 1 and by_reason["gap"] >= 1, by_reason
    assert not any(v for k, v in frames_lost.items() if dict(k)["kind"] == "audio")
