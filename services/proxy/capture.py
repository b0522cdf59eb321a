"""Capture of one received track: encoded frames to segment files, never decoded.

The seams, all on one ``RTCRtpReceiver`` instance of aiortc 1.16 (nothing process-wide is
patched; ``attach`` sets them up before media flows):

- its private ``__decoder_queue`` (``put((codec, JitterFrame))``, on the event loop) is read by a
  decoder thread started in ``receive()``. ``CaptureQueue`` takes that queue's place: frames go
  straight to the segment writer on the loop; only the end-of-stream ``None`` is passed to the
  (then idle) decoder thread so it exits as usual. Nothing is decoded.
- its ``__jitter_buffer``: for video, ``VideoJitter`` wraps aiortc's to learn when frames are lost
  (and to give up a lost packet after a second instead of stalling); for audio,
  ``OpusPassthrough`` replaces it (one Opus packet is one frame).
- its ``_handle_rtcp_packet``: wrapped to hand RTCP sender reports to the capture (A/V alignment).
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

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtcpSrPacket
from aiortc.utils import uint16_add, uint16_gt

from shared.backup import capture_dir, pseudonym, segment_name
from shared.capture_format import Frame, SegmentHeader, SegmentWriter
from shared.events import captures as cap
from shared.events import now
from shared.events.base import Event
from shared.recording_key import RecordingKey

from . import facts, media, metrics

log = logging.getLogger(__name__)

Publish = Callable[[Event], Awaitable[None]]
PLI_INTERVAL_S = 1.0
MAX_HOLE_WAIT_S = 1.0  # how long a missing video packet may hold back the frames behind it
RECEIVER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
RECEIVER_RTX_ATTR = "_RTCRtpReceiver__rtx_ssrc"
RECEIVER_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
RECEIVER_STREAMS_ATTR = "_RTCRtpReceiver__remote_streams"
RECEIVER_MAPPER_ATTR = "_RTCRtpReceiver__timestamp_mapper"
MAX_SENDER_REPORTS = 64  # kept per segment (the first ones, and always the latest)


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
    key: RecordingKey  # the recording's data key: segments are written encrypted

    @property
    def track_id(self) -> str:
        return facts.track_id_for(self.participant_id, self.session_id, self.kind)


class KeyframeRequester(Protocol):
    def __call__(self) -> None: ...


class Keep(Protocol):
    """Puts a finished segment in the backup store (``Spool.keep``)."""

    def __call__(self, path: Path, *, sha256: str, drop_local: bool = True) -> Awaitable[None]: ...


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
        discard: bool = False,
        keep: Keep | None = None,
    ) -> None:
        self.ident = ident
        self._keep = keep
        self.discard = discard  # benchmark baseline: count frames, write nothing
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
        self.received = 0  # frames the receiver handed over
        self.frames = 0  # frames written
        self.dropped = 0
        self.keyframe_requests = 0
        self.packets_lost = 0
        self.gaps = 0  # times the receiver gave up on missing packets and dropped frames
        self._after_gap = False  # video: frames were lost; wait for a key frame
        self._sender_reports: list[tuple[int, int]] = []  # (receiver rtp ts, ntp unix ns)
        self.started = False
        self.closed = False
        self._closing = False
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name=f"capture-{ident.track_id}")

    # -- on the event loop, per frame -------------------------------------------------------

    def on_frame(self, codec: CodecLike, data: bytes, rtp_ts: int) -> None:
        if self.closed:
            return
        self.received += 1
        if self.discard:
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

    def on_sender_report(self, rtp_ts: int, ntp_unix_ns: int) -> None:
        """An RTCP sender report: ``rtp_ts`` on the receiver's timeline (that of the frames)."""
        if self.closed:
            return
        if len(self._sender_reports) >= MAX_SENDER_REPORTS:
            self._sender_reports.pop()
        self._sender_reports.append((rtp_ts, ntp_unix_ns))

    def on_gap(self, pli_sent: bool) -> None:
        """Video frames were lost (packets missing and not repaired in time): frames until the
        next key frame would not decode, so they are dropped, and a key frame is asked for
        (``pli_sent``: aiortc already sent the PLI; it is counted here all the same)."""
        if self.closed:
            return
        self.gaps += 1
        metrics.GAPS.inc()
        self._after_gap = True
        if pli_sent:
            self.keyframe_requests += 1
            self._last_pli = time.monotonic()
        else:
            self._last_pli = float("-inf")
            self._maybe_request_keyframe()

    def _on_frame(self, codec: CodecLike, data: bytes, rtp_ts: int, wall_ns: int) -> None:
        kind = self.ident.kind
        keyframe = media.is_keyframe(codec.name, data)
        if self._after_gap:
            if not keyframe:
                self._drop("gap")
                self._maybe_request_keyframe()
                return
            self._after_gap = False
        if self._writer is None:
            if kind == "video" and not keyframe:
                self._drop("no_keyframe")
                self._maybe_request_keyframe()
                return
            if not self.started:
                self._start(codec, rtp_ts, wall_ns)
            self._open_segment()
        elif codec.mimeType != self._codec_mime:
            self._drop("codec_switch")  # not recordable as one track
            return
        assert self._writer is not None and self._base_ts is not None
        ts = rtp_ts - self._base_ts
        if ts < 0:
            self._drop("late")  # a frame from before the capture's first frame
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

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        metrics.FRAMES_LOST.labels(kind=self.ident.kind, reason=reason).inc()

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
        key = i.key.data_key
        # Pseudonymous folders: the backup's names say nothing of who was on the call.
        folder = capture_dir(
            i.rec_dir, pseudonym(key, i.participant_id), pseudonym(key, i.track_id)
        )
        path = folder / segment_name(self.seq)
        header = SegmentHeader(
            recording_id=i.recording_id,
            track_id=i.track_id,
            kind=i.kind,
            codec=self._codec_mime,
            clock_rate=self._clock_rate,
            channels=self._channels,
            seq=self.seq,
            participant_id=i.participant_id,
            session_id=i.session_id,
        )
        name = path.relative_to(i.rec_dir).as_posix()
        self._writer = SegmentWriter(path, header, key=key, name=name)
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
        base = self._base_ts or 0
        reports = tuple((ts - base, ntp) for ts, ntp in self._sender_reports)
        self._sender_reports = []
        self._enqueue(lambda: self._close_and_publish(writer, seq, reports))

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

    async def _close_and_publish(
        self, writer: SegmentWriter, seq: int, sender_reports: tuple[tuple[int, int], ...]
    ) -> None:
        await asyncio.to_thread(writer.close)
        i, s = self.ident, writer.stats
        metrics.SEGMENTS.labels(kind=i.kind).inc()
        metrics.CAPTURED_BYTES.labels(kind=i.kind).inc(writer.digest.size)
        metrics.FRAMES.labels(kind=i.kind).inc(s.frames)
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
            sender_reports=sender_reports,
        )
        if self._keep is not None:
            # In the store before the event says it exists: no reader ever misses it. The local
            # copy goes only after the event: killed in between, salvage finds it again.
            await self._keep(writer.path, sha256=writer.stored.sha256, drop_local=False)
        await self._publish(event)
        if self._keep is not None:
            await asyncio.to_thread(writer.path.unlink, missing_ok=True)

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
        self.codec: Any = None  # the codec of the latest frame
        self._to_thread: queue.Queue[None] = queue.Queue()

    def put(
        self, item: tuple[Any, Any] | None, block: bool = True, timeout: float | None = None
    ) -> None:
        if item is None:
            self._to_thread.put(None)  # end of stream: lets the decoder thread exit
            return
        codec, frame = item
        self.codec = codec
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
    replace_jitter_buffer(receiver, capture)
    watch_sender_reports(receiver, capture)
    return q


class VideoJitter:
    """Wraps one video receiver's aiortc ``JitterBuffer``: tells the capture when frames are lost,
    and stops a lost packet from stalling the track.

    aiortc's buffer hands out a frame only once every packet before it is there; a packet that
    never comes (lost, and not repaired by NACK/RTX) holds everything behind it until the buffer
    overflows (512 packets: 5-15 s of video), then drops frames and sets ``pli_flag``. Here a
    packet missing for ``max_hole_wait_s`` is given up at once instead (with the frame it
    belonged to, by aiortc's own ``smart_remove``). Either way the capture is told (``on_gap``):
    frames until the next key frame would not decode.
    """

    def __init__(
        self,
        inner: Any,
        on_gap: Callable[[bool], None],
        *,
        max_hole_wait_s: float = MAX_HOLE_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._on_gap = on_gap
        self._max_wait = max_hole_wait_s
        self._clock = clock
        self._highest: int | None = None
        self._missing: dict[int, float] = {}  # seq -> when it was first missed (oldest first)

    def add(self, packet: Any) -> tuple[bool, Any]:
        seq = packet.sequence_number
        if self._highest is None:
            self._highest = seq
        elif uint16_gt(seq, self._highest):
            gap = uint16_add(seq, -self._highest) - 1
            if gap >= self._inner.capacity:
                self._missing.clear()  # beyond the buffer: aiortc resets it and flags a PLI
            elif gap:
                t = self._clock()
                for i in range(1, gap + 1):
                    self._missing[uint16_add(self._highest, i)] = t
            self._highest = seq
        else:
            self._missing.pop(seq, None)  # a late or repaired packet
        if self._missing:
            self._give_up_old_holes()
        pli_flag, frame = self._inner.add(packet)
        if pli_flag:
            self._forget_passed()
            self._on_gap(True)  # aiortc sent a PLI for it
        return pli_flag, frame

    def _give_up_old_holes(self) -> None:
        seq, since = next(iter(self._missing.items()))
        if self._clock() - since < self._max_wait:
            return
        inner = self._inner
        origin = inner._origin
        if origin is not None and not uint16_gt(origin, seq):
            # remove every slot up to the hole and the rest of the frame around it; what
            # follows may be the tail of the next frame, which the capture refuses
            if inner.smart_remove(uint16_add(seq, -origin) + 1):
                inner._origin = None  # emptied: the next packet starts it again
            self._forget_passed()
            self._on_gap(False)
        else:
            self._missing.pop(seq, None)

    def flush(self) -> JitterFrame | None:
        """The frame aiortc still holds at the end of the stream, if it is whole: aiortc hands a
        frame on only when the next one begins, so the last one would be lost. Whole means its
        packets run unbroken from the head of the buffer to one with the RTP marker bit."""
        inner = self._inner
        if inner._origin is None:
            return None
        packets: list[Any] = []
        for i in range(inner.capacity):
            p = inner._packets[(inner._origin + i) % inner.capacity]
            if p is None or (packets and p.timestamp != packets[0].timestamp):
                break
            packets.append(p)
        if not packets or not packets[-1].marker:
            return None
        inner.remove(len(packets))
        return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packets[0].timestamp)

    def _forget_passed(self) -> None:
        origin = self._inner._origin
        for seq in list(self._missing):
            if origin is None or uint16_gt(origin, seq):
                del self._missing[seq]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class OpusPassthrough:
    """Stands in for one audio receiver's jitter buffer: each Opus RTP packet is one whole frame
    (RFC 7587), so it is handed on as it arrives.

    aiortc's audio buffer (16 packets, prefetch 4) stalls on every lost packet and then discards
    frames it already had: measured here, 8.5% packets lost became 39% frames lost. A packet
    older than one already handed on (late or duplicate) is dropped: its place has passed.
    """

    capacity = 1

    def __init__(self) -> None:
        self._last: int | None = None
        self.late = 0

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None and not uint16_gt(seq, self._last):
            self.late += 1
            return False, None
        self._last = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


def watch_sender_reports(receiver: Any, capture: TrackCapture) -> None:
    """Hand the capture every RTCP sender report of the sender's media SSRC (one receiver's
    ``_handle_rtcp_packet``, wrapped on the instance), its RTP time mapped the way aiortc maps
    the frames' (``TimestampMapper``: from the first frame's timestamp, unwrapped)."""
    handle = receiver._handle_rtcp_packet
    mapper = getattr(receiver, RECEIVER_MAPPER_ATTR, None)
    if mapper is None or not hasattr(mapper, "_origin"):
        raise RuntimeError(
            "this aiortc version has no RTCRtpReceiver timestamp mapper; pin aiortc==1.16.0"
        )

    async def handle_rtcp(packet: Any) -> None:
        if (
            isinstance(packet, RtcpSrPacket)
            and mapper._origin is not None
            and packet.ssrc not in getattr(receiver, RECEIVER_RTX_ATTR, {})
        ):
            info = packet.sender_info
            origin, last = mapper._origin, mapper._last
            capture.on_sender_report(
                media.unwrap_rtp_ts(info.rtp_timestamp, origin, last - origin),
                media.ntp_to_unix_ns(info.ntp_timestamp),
            )
        await handle(packet)

    receiver._handle_rtcp_packet = handle_rtcp


def replace_jitter_buffer(receiver: Any, capture: TrackCapture) -> None:
    inner = getattr(receiver, RECEIVER_JITTER_ATTR, None)
    if inner is None or not hasattr(inner, "_origin"):
        raise RuntimeError(
            "this aiortc version has no RTCRtpReceiver jitter buffer; pin aiortc==1.16.0"
        )
    if capture.ident.kind == "video":
        setattr(receiver, RECEIVER_JITTER_ATTR, VideoJitter(inner, capture.on_gap))
    else:
        setattr(receiver, RECEIVER_JITTER_ATTR, OpusPassthrough())


def packets_lost(receiver: Any) -> int:
    """Packets lost on the sender's media SSRCs, as RTCP receiver reports count them (RFC 3550
    A.3: expected - received): before any NACK/RTX repair, which arrives on the RTX SSRC."""
    streams: dict[int, Any] = getattr(receiver, RECEIVER_STREAMS_ATTR, {})
    rtx = getattr(receiver, RECEIVER_RTX_ATTR, {})
    return sum(int(s.packets_lost) for ssrc, s in streams.items() if ssrc not in rtx)


def flush_held_frame(receiver: Any) -> None:
    """At the end of a session: hand the capture the last whole video frame aiortc still holds."""
    jitter = getattr(receiver, RECEIVER_JITTER_ATTR, None)
    q = getattr(receiver, RECEIVER_QUEUE_ATTR, None)
    mapper = getattr(receiver, RECEIVER_MAPPER_ATTR, None)
    if not isinstance(jitter, VideoJitter) or not isinstance(q, CaptureQueue) or q.codec is None:
        return
    frame = jitter.flush()
    if frame is not None and mapper is not None:
        frame.timestamp = mapper.map(frame.timestamp)
        q.put((q.codec, frame))


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
