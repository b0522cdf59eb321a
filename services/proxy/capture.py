"""Capture of one received track: encoded frames to segment files, never decoded.

The seam: aiortc 1.16's ``RTCRtpReceiver`` hands every reassembled frame to its private
``__decoder_queue`` (``put((codec, JitterFrame))``, on the event loop) and a decoder thread,
started in ``receive()``, reads that queue. ``CaptureQueue`` takes that queue's place on one
receiver: frames go straight to the segment writer on the loop; only the end-of-stream ``None`` is
passed to the (then idle) decoder thread so it exits as usual. Nothing is decoded and nothing
process-wide is patched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared.backup import capture_dir, segment_name
from shared.capture_format import Frame, SegmentHeader, SegmentWriter
from shared.events import captures as cap
from shared.events import now
from shared.events.base import Event

from . import facts, media

log = logging.getLogger(__name__)

Publish = Callable[[Event], Awaitable[None]]
PLI_INTERVAL_S = 1.0
RECEIVER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
RECEIVER_RTX_ATTR = "_RTCRtpReceiver__rtx_ssrc"


class CodecLike(Protocol):
    mimeType: str
    clockRate: int
    channels: int | None

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class TrackIdentity:
    recording_id: str
    tenant_id: str
    participant_id: str
    session_id: str
    kind: str  # "audio" | "video"
    rec_dir: Path

    @property
    def track_id(self) -> str:
        return facts.track_id_for(self.participant_id, self.session_id, self.kind)


class KeyframeRequester(Protocol):
    def __call__(self) -> None: ...


class TrackCapture:
    """Writes one track's frames to rotating segments and publishes what it wrote, in order.

    ``on_frame`` runs on the event loop inside aiortc's packet handler: it only appends to a
    buffered file. Closing a segment (fsync + rename) runs in a thread, and events are published
    by one worker task per track so their order is the order things happened.
    """

    def __init__(
        self,
        ident: TrackIdentity,
        *,
        segment_seconds: float,
        publish: Publish,
        request_keyframe: KeyframeRequester,
        on_error: Callable[[TrackCapture, Exception], None],
    ) -> None:
        self.ident = ident
        self.segment_seconds = segment_seconds
        self._publish = publish
        self._request_keyframe = request_keyframe
        self._on_error = on_error
        self._writer: SegmentWriter | None = None
        self._codec_mime = ""
        self._clock_rate = 0
        self._channels = 0
        self._base_ts: int | None = None
        self._last_pli = float("-inf")
        self._rotation_pli_sent = False
        self.seq = 0
        self.frames = 0
        self.dropped = 0
        self.keyframe_requests = 0
        self.packets_lost = 0
        self.started = False
        self.closed = False
        self._closing = False
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name=f"capture-{ident.track_id}")

    # -- on the event loop, per frame -------------------------------------------------------

    def on_frame(self, codec: CodecLike, data: bytes, rtp_ts: int) -> None:
        if self.closed:
            return
        try:
            self._on_frame(codec, data, rtp_ts, time.time_ns())
        except Exception as exc:  # disk full, permissions...: stop this track, end the session
            self.closed = True
            if self._writer is not None:
                # Keep the .part: its complete records are salvaged at the next start.
                with contextlib.suppress(Exception):
                    self._writer._fh.close()
                self._writer = None
            log.error(
                "capture failed",
                extra={"track_id": self.ident.track_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            self._on_error(self, exc)

    def _on_frame(self, codec: CodecLike, data: bytes, rtp_ts: int, wall_ns: int) -> None:
        kind = self.ident.kind
        keyframe = media.is_keyframe(codec.name, data)
        if self._writer is None:
            if kind == "video" and not keyframe:
                self.dropped += 1
                self._maybe_request_keyframe()
                return
            if not self.started:
                self._start(codec, rtp_ts, wall_ns)
            self._open_segment()
        elif codec.mimeType != self._codec_mime:
            self.dropped += 1  # the sender switched codecs mid-track: not recordable as one track
            return
        assert self._writer is not None and self._base_ts is not None
        ts = rtp_ts - self._base_ts
        if ts < 0:
            self.dropped += 1  # late frame from before the capture's first frame
            return
        stats = self._writer.stats
        if stats.frames:
            elapsed = media.segment_elapsed(
                stats.first_rtp_ts, ts, self._clock_rate, self.segment_seconds
            )
            if media.rotate_now(kind, keyframe, elapsed):
                self._finish_segment()
                self._open_segment()
            elif elapsed:
                if not self._rotation_pli_sent:
                    self._last_pli = float("-inf")
                    self._rotation_pli_sent = True
                self._maybe_request_keyframe()
        self._writer.append(Frame(ts, wall_ns, keyframe, bytes(data)))
        self.frames += 1

    def _maybe_request_keyframe(self) -> None:
        t = time.monotonic()
        if t - self._last_pli >= PLI_INTERVAL_S:
            self._last_pli = t
            self.keyframe_requests += 1
            self._request_keyframe()

    def _start(self, codec: CodecLike, rtp_ts: int, wall_ns: int) -> None:
        self.started = True
        self._codec_mime = codec.mimeType
        self._clock_rate = codec.clockRate
        self._channels = codec.channels or 0
        self._base_ts = rtp_ts
        i = self.ident
        event = cap.TrackStarted(
            event_id=facts.track_started_id(i.recording_id, i.track_id),
            recording_id=i.recording_id,
            tenant_id=i.tenant_id,
            occurred_at=now(),
            participant_id=i.participant_id,
            session_id=i.session_id,
            track_id=i.track_id,
            kind="audio" if i.kind == "audio" else "video",
            codec=codec.mimeType,
            clock_rate=codec.clockRate,
            channels=codec.channels or 0,
            first_frame_wallclock_ns=wall_ns,
        )
        self._enqueue(lambda: self._publish(event))

    def _open_segment(self) -> None:
        i = self.ident
        path = capture_dir(i.rec_dir, i.participant_id, i.track_id) / segment_name(self.seq)
        header = SegmentHeader(
            recording_id=i.recording_id,
            track_id=i.track_id,
            kind=i.kind,
            codec=self._codec_mime,
            clock_rate=self._clock_rate,
            channels=self._channels,
            seq=self.seq,
        )
        self._writer = SegmentWriter(path, header)
        self._rotation_pli_sent = False

    def _finish_segment(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        seq = self.seq
        self.seq += 1
        if writer.stats.frames == 0:
            self._enqueue(lambda: asyncio.to_thread(writer.abandon))
            return
        self._enqueue(lambda: self._close_and_publish(writer, seq))

    # -- ordered background work ------------------------------------------------------------

    def _enqueue(self, job: Callable[[], Awaitable[None]]) -> None:
        self._jobs.put_nowait(job)

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            if job is None:
                return
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Publishing retries on its own; what lands here is a file error at close.
                log.exception("capture job failed", extra={"track_id": self.ident.track_id})

    async def _close_and_publish(self, writer: SegmentWriter, seq: int) -> None:
        await asyncio.to_thread(writer.close)
        i, s = self.ident, writer.stats
        event = cap.SegmentWritten(
            event_id=facts.segment_id(i.recording_id, i.track_id, seq),
            recording_id=i.recording_id,
            tenant_id=i.tenant_id,
            occurred_at=now(),
            participant_id=i.participant_id,
            track_id=i.track_id,
            kind="audio" if i.kind == "audio" else "video",
            seq=seq,
            path=writer.path.relative_to(i.rec_dir).as_posix(),
            sha256=writer.digest.sha256,
            size=writer.digest.size,
            frames=s.frames,
            first_rtp_ts=s.first_rtp_ts,
            last_rtp_ts=s.last_rtp_ts,
            first_wallclock_ns=s.first_wallclock_ns,
            last_wallclock_ns=s.last_wallclock_ns,
            keyframes=s.keyframes,
        )
        await self._publish(event)

    async def close(self) -> None:
        """Stop taking frames, finish the open segment, publish TrackEnded; wait until done."""
        if self._closing:
            await asyncio.shield(self._worker)
            return
        self._closing = True
        self.closed = True
        self._finish_segment()
        if self.started:
            i = self.ident
            written = self.seq

            async def ended() -> None:
                await self._publish(
                    cap.TrackEnded(
                        event_id=facts.track_ended_id(i.recording_id, i.track_id),
                        recording_id=i.recording_id,
                        tenant_id=i.tenant_id,
                        occurred_at=now(),
                        participant_id=i.participant_id,
                        track_id=i.track_id,
                        segments=written,
                        frames=self.frames,
                        packets_lost=self.packets_lost,
                        keyframe_requests=self.keyframe_requests,
                    )
                )

            self._enqueue(ended)
        self._jobs.put_nowait(None)
        await asyncio.shield(self._worker)


class CaptureQueue:
    """Stands in for one ``RTCRtpReceiver``'s decoder queue (see the module docstring)."""

    def __init__(self, capture: TrackCapture) -> None:
        self.capture = capture
        self._to_thread: queue.Queue[None] = queue.Queue()

    def put(
        self, item: tuple[Any, Any] | None, block: bool = True, timeout: float | None = None
    ) -> None:
        if item is None:
            self._to_thread.put(None)  # end of stream: lets the decoder thread exit
            return
        codec, frame = item
        self.capture.on_frame(codec, frame.data, frame.timestamp)

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        return self._to_thread.get(block, timeout)


def attach(receiver: Any, capture: TrackCapture) -> CaptureQueue:
    """Put a ``CaptureQueue`` in place of the receiver's decoder queue (before ``receive()``)."""
    if not hasattr(receiver, RECEIVER_QUEUE_ATTR):
        raise RuntimeError(
            "this aiortc version has no RTCRtpReceiver decoder queue; pin aiortc==1.16.0"
        )
    q = CaptureQueue(capture)
    setattr(receiver, RECEIVER_QUEUE_ATTR, q)
    return q


def media_ssrcs(receiver: Any) -> list[int]:
    """The sender's media SSRCs seen lately (RTX repair streams left out)."""
    rtx = getattr(receiver, RECEIVER_RTX_ATTR, {})
    return [s.source for s in receiver.getSynchronizationSources() if s.source not in rtx]


def pli_sender(receiver: Any, tasks: set[asyncio.Task[Any]]) -> KeyframeRequester:
    """A callable that asks the sender for a keyframe (RTCP PLI) on every media SSRC."""

    def request() -> None:
        for ssrc in media_ssrcs(receiver):
            task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return request
