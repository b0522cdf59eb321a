"""WHIP sessions: one aiortc peer connection per publisher, its track captures, and the registry.

A session's life: ``negotiate`` (offer -> answer, captures attached to the receivers) ->
``announce`` (``participant_joined``) -> media -> ``end`` (take in the media already received,
close the peer connection, finish every segment, ``track_ended`` per track,
``participant_left``). ``end`` is idempotent and is what DELETE,
a failed/closed connection, a stop request and shutdown all call.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from nats.js import JetStreamContext

from shared import natsio
from shared.events import captures as cap
from shared.events import now
from shared.events.base import Event
from shared.recording_key import RecordingKey

from . import capture, facts, media, metrics, sockets
from .config import ProxyConfig
from .errors import WhipRefused

log = logging.getLogger(__name__)

Publish = Callable[[Event], Awaitable[None]]


def make_publish(js: JetStreamContext) -> Publish:
    """Publish an event, retrying until JetStream takes it: a fact the proxy saw is never dropped
    (the deterministic id makes every retry a no-op once one copy is stored)."""

    async def publish(event: Event) -> None:
        delay = 0.5
        while True:
            try:
                await natsio.publish(js, event)
                return
            except (nats.errors.Error, OSError) as exc:
                log.warning(
                    "publish failed; retrying",
                    extra={"event_id": event.event_id, "error": type(exc).__name__},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    return publish


def rtc_configuration(config: ProxyConfig) -> RTCConfiguration:
    servers = [
        RTCIceServer(
            urls=url,
            username=config.ice_username or None if url.startswith("turn") else None,
            credential=config.ice_credential or None if url.startswith("turn") else None,
        )
        for url in config.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def parse_offer(text: str) -> list[media.OfferMedia]:
    """Parse the SDP offer enough to check it; a parse failure is a 400 with the reason."""
    try:
        desc = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:
        raise WhipRefused(
            400, f"The body is not a valid SDP offer ({type(exc).__name__}); send an SDP offer."
        ) from None
    out = []
    for m in desc.media:
        out.append(
            media.OfferMedia(
                kind=m.kind,
                direction=m.direction or "sendrecv",
                codec_names=tuple(c.mimeType.split("/", 1)[-1] for c in m.rtp.codecs),
            )
        )
    return out


def new_session_id() -> str:
    return secrets.token_hex(4)


class WhipSession:
    def __init__(
        self,
        *,
        registry: Sessions,
        recording_id: str,
        tenant_id: str,
        participant_id: str,
        display_name: str,
        rec_dir: Path,
        publish: Publish,
        key: RecordingKey,
    ) -> None:
        self.registry = registry
        self.key = key  # this session's copy of the recording key, wiped when it has ended
        self.config = registry.config
        self.recording_id = recording_id
        self.tenant_id = tenant_id
        self.participant_id = participant_id
        self.display_name = display_name
        self.session_id = new_session_id()
        self.rec_dir = rec_dir
        self.etag = f'"{secrets.token_hex(8)}"'
        self._publish = publish
        self.captures: dict[str, capture.TrackCapture] = {}
        self._receivers: dict[str, Any] = {}
        self._pli_tasks: set[asyncio.Task[Any]] = set()
        self._announced = False
        # set once participant_joined is stored, or when the session ends without one
        self._settled = asyncio.Event()
        self._end_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.pc = RTCPeerConnection(rtc_configuration(self.config))
        registry.pc_opened(self.pc)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def location(self) -> str:
        """The session's resource URL: on this very instance when it has a URL of its own."""
        base = self.config.whip_instance_url.rstrip("/")
        return f"{base}/whip/{self.recording_id}/{self.session_id}"

    @property
    def ending(self) -> bool:
        return self._end_task is not None

    # -- negotiation --------------------------------------------------------------------------

    def _on_track(self, track: Any) -> None:
        transceiver = next(
            (t for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )
        if transceiver is None or track.kind not in ("audio", "video"):
            return
        receiver = transceiver.receiver
        ident = capture.TrackIdentity(
            recording_id=self.recording_id,
            tenant_id=self.tenant_id,
            participant_id=self.participant_id,
            session_id=self.session_id,
            kind=track.kind,
            rec_dir=self.rec_dir,
            key=self.key,
        )
        cap_ = capture.TrackCapture(
            ident,
            segment_seconds=self.config.segment_seconds,
            publish=self._publish_track_event,
            keep=self.registry.keep,
            request_keyframe=capture.pli_sender(receiver, self._pli_tasks),
            on_error=self._on_capture_error,
            discard=self.config.capture_discard,
        )
        capture.attach(receiver, cap_)
        self.captures[track.kind] = cap_
        self._receivers[track.kind] = receiver

    def _keep_recordable_codecs(self) -> None:
        for t in self.pc.getTransceivers():
            codecs = list(t._codecs)
            refs = [
                media.CodecRef(
                    c.mimeType,
                    int(c.payloadType or 0),
                    apt if isinstance(apt := c.parameters.get("apt"), int) else None,
                )
                for c in codecs
            ]
            keep = set(media.recordable_payload_types(t.kind, refs))
            if not keep:
                raise WhipRefused(
                    400, f"The offer's {t.kind} codecs cannot be recorded; offer VP8, H264 or Opus."
                )
            t._codecs = [c for c in codecs if c.payloadType in keep]

    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the offer and return the answer, with every local ICE candidate in it."""
        media.check_offer(parse_offer(offer_sdp))
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except WhipRefused:
            raise
        except Exception as exc:
            raise WhipRefused(
                400, f"The SDP offer was refused: {type(exc).__name__}: {str(exc)[:200]}."
            ) from None
        if not self.captures:
            raise WhipRefused(400, "The offer sends no audio or video track to record.")
        self._keep_recordable_codecs()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)  # aiortc gathers every candidate here
        sockets.enlarge_receive_buffers(self.pc, self.config.udp_receive_buffer_bytes)
        local = self.pc.localDescription
        if local is None:
            raise WhipRefused(500, "The proxy could not make an SDP answer; try again.")
        return str(local.sdp)

    async def announce(self) -> None:
        joined = cap.ParticipantJoined(
            event_id=facts.joined_id(self.recording_id, self.session_id),
            recording_id=self.recording_id,
            tenant_id=self.tenant_id,
            occurred_at=now(),
            participant_id=self.participant_id,
            session_id=self.session_id,
            display_name=self.display_name,
            joined_at_ns=time.time_ns(),
        )
        self._announced = True  # from here on, the session's end is published too
        await self._publish(joined)
        self._settled.set()
        self._watchdog = asyncio.create_task(self._connect_watchdog())

    async def _publish_track_event(self, event: Event) -> None:
        await self._settled.wait()  # participant_joined first
        if self._announced:
            await self._publish(event)

    # -- ending -------------------------------------------------------------------------------

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info(
            "connection state",
            extra={
                "session_id": self.session_id,
                "recording_id": self.recording_id,
                "state": state,
            },
        )
        if state in ("failed", "closed"):
            self.end(f"connection {state}")

    def _on_capture_error(self, cap_: capture.TrackCapture, exc: Exception) -> None:
        self.end("capture failed: " + type(exc).__name__)

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.config.connect_timeout_seconds)
        if self.pc.connectionState != "connected":
            self.end("media did not connect in time")

    def end(self, reason: str) -> asyncio.Task[None]:
        """End the session (idempotent); await the returned task to wait for it."""
        if self._end_task is None:
            self._end_task = asyncio.create_task(self._end(reason), name=f"end-{self.session_id}")
        return self._end_task

    async def _end(self, reason: str) -> None:
        try:
            await self._finish(reason)
        finally:
            self.key.wipe()  # every segment of the session is written: the key's job is done

    async def _finish(self, reason: str) -> None:
        log.info(
            "ending session",
            extra={
                "session_id": self.session_id,
                "recording_id": self.recording_id,
                "participant_id": self.participant_id,
                "reason": reason,
            },
        )
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        if self.pc.connectionState == "connected":
            # media sent before the end but not read yet (the proxy was behind) is recorded too
            waited = await sockets.take_in_received(self.pc)
            if waited > 0.1:
                log.info(
                    "took in the media received before the end",
                    extra={"session_id": self.session_id, "waited_s": round(waited, 2)},
                )
        for receiver in self._receivers.values():
            capture.flush_held_frame(receiver)
        for cap_ in self.captures.values():
            cap_.closed = True
        for kind, receiver in self._receivers.items():
            lost = self.captures[kind].packets_lost = capture.packets_lost(receiver)
            metrics.PACKETS_LOST.labels(kind=kind).inc(max(lost, 0))
        try:
            await self.pc.close()
        except Exception:
            log.exception(
                "closing the peer connection failed", extra={"session_id": self.session_id}
            )
        self.registry.pc_closed(self.pc)
        if not self._announced:
            self._settled.set()  # never announced: track events are dropped, not awaited
        await asyncio.gather(*(c.close() for c in self.captures.values()))
        if self._announced:
            await self._settled.wait()
            await self._publish(
                cap.ParticipantLeft(
                    event_id=facts.left_id(self.recording_id, self.session_id),
                    recording_id=self.recording_id,
                    tenant_id=self.tenant_id,
                    occurred_at=now(),
                    participant_id=self.participant_id,
                    session_id=self.session_id,
                    reason=reason,
                    left_at_ns=time.time_ns(),
                )
            )
        self.registry.remove(self)


class Sessions:
    """Every live session of this proxy, plus the recordings it has seen stopped."""

    def __init__(self, config: ProxyConfig, *, keep: capture.Keep | None = None) -> None:
        self.config = config
        self.keep = keep  # puts a closed segment in the shared backup store
        self.by_id: dict[str, WhipSession] = {}
        self.by_participant: dict[tuple[str, str], WhipSession] = {}
        self.stopped: set[str] = set()
        self._pcs: set[int] = set()
        self._ended_frames = (0, 0)  # (received, written) by sessions that have ended

    @property
    def open_peer_connections(self) -> int:
        return len(self._pcs)

    def pc_opened(self, pc: RTCPeerConnection) -> None:
        self._pcs.add(id(pc))

    def pc_closed(self, pc: RTCPeerConnection) -> None:
        self._pcs.discard(id(pc))

    def check_admission(self, recording_id: str, participant_id: str) -> None:
        if recording_id in self.stopped:
            raise WhipRefused(410, "This recording has been stopped; start a new recording.")
        if len(self.by_id) >= self.config.max_publishers:
            raise WhipRefused(
                503,
                f"The proxy is at its limit of {self.config.max_publishers} publishers; "
                "try again later or raise RESGUARDO_MAX_PUBLISHERS.",
            )
        if (recording_id, participant_id) in self.by_participant:
            raise WhipRefused(
                409,
                f"Participant {participant_id!r} is already publishing to this recording; "
                "end that session (DELETE) or use another participant name.",
            )

    def add(self, session: WhipSession) -> None:
        self.check_admission(session.recording_id, session.participant_id)
        self.by_id[session.session_id] = session
        self.by_participant[(session.recording_id, session.participant_id)] = session

    def frame_totals(self) -> tuple[int, int]:
        """Frames (received from the receivers, written to segments) since the proxy started."""
        received, written = self._ended_frames
        for s in self.by_id.values():
            for c in s.captures.values():
                received, written = received + c.received, written + c.frames
        return received, written

    def remove(self, session: WhipSession) -> None:
        if self.by_id.get(session.session_id) is session:
            del self.by_id[session.session_id]
            received, written = self._ended_frames
            for c in session.captures.values():
                received, written = received + c.received, written + c.frames
            self._ended_frames = (received, written)
        key = (session.recording_id, session.participant_id)
        if self.by_participant.get(key) is session:
            del self.by_participant[key]

    def get(self, recording_id: str, session_id: str) -> WhipSession | None:
        s = self.by_id.get(session_id)
        return s if s is not None and s.recording_id == recording_id else None

    def of_recording(self, recording_id: str) -> list[WhipSession]:
        return [s for s in self.by_id.values() if s.recording_id == recording_id]

    async def end_recording(self, recording_id: str, reason: str) -> None:
        self.stopped.add(recording_id)
        await asyncio.gather(*(s.end(reason) for s in self.of_recording(recording_id)))

    async def end_all(self, reason: str) -> None:
        await asyncio.gather(*(s.end(reason) for s in list(self.by_id.values())))
