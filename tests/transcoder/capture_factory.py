"""Make a recording's capture the way the proxy would: real encoded VP8/H.264 and Opus frames in
segment files under the backup layout, plus the matching CAPTURES events.

Reusable by any test that needs a closed capture::

    cap = make_capture(backup_root, [ParticipantSpec("alice"), ParticipantSpec("bob")])
    await publish_capture(js, cap)

Segments are encrypted under ``key`` (random unless given: a service test passes the key the
vault issued for the recording) in pseudonymous folders, as the proxy writes them.
"""

from __future__ import annotations

import array
import math
import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from nats.js import JetStreamContext

from services.transcoder.sealing import RecordingFiles
from shared import natsio
from shared.backup import capture_dir, pseudonym, recording_dir, segment_name
from shared.capture_format import Frame, SegmentHeader, SegmentWriter
from shared.events import captures as cap
from shared.events import event_id, now
from shared.events.base import Event
from shared.ids import new_recording_id, new_tenant_id

WIDTH, HEIGHT, FPS = 320, 240, 30
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
AUDIO_FRAME = 960  # 20 ms at 48 kHz
GOP = 30  # a key frame every second


Planes = tuple[bytes, bytes, bytes]

FLASH_PERIOD_S = 2.0  # the flash/beep publisher: a white frame and a beep every 2 s of wall clock
FLASH_S = 0.1  # both last 100 ms
BEEP_HZ = 1000
DARK_Y, WHITE_Y = 20, 235


def flashing(rel_s: float) -> bool:
    """Is the publisher flashing/beeping at ``rel_s`` seconds after the recording's start?"""
    k = math.floor(rel_s / FLASH_PERIOD_S)
    return k >= 1 and rel_s - k * FLASH_PERIOD_S < FLASH_S


def flash_painter(session_start_s: float) -> Callable[[int], Planes]:
    chroma = bytes([128]) * (WIDTH * HEIGHT // 4)
    white, dark = bytes([WHITE_Y]) * (WIDTH * HEIGHT), bytes([DARK_Y]) * (WIDTH * HEIGHT)

    def paint(i: int) -> Planes:
        return (white if flashing(session_start_s + i / FPS) else dark), chroma, chroma

    return paint


def color_painter(y: int, u: int, v: int) -> Callable[[int], Planes]:
    planes = (
        bytes([y]) * (WIDTH * HEIGHT),
        bytes([u]) * (WIDTH * HEIGHT // 4),
        bytes([v]) * (WIDTH * HEIGHT // 4),
    )
    return lambda i: planes


def beep_pcm(audio_start_s: float) -> Callable[[int], bytes]:
    """Stereo s16 for 20 ms frame ``j`` of a track whose first sample is at ``audio_start_s``."""

    def pcm(j: int) -> bytes:
        out = array.array("h")
        t0 = audio_start_s + j * AUDIO_FRAME / AUDIO_CLOCK
        for n in range(AUDIO_FRAME):
            t = t0 + n / AUDIO_CLOCK
            v = int(12000 * math.sin(2 * math.pi * BEEP_HZ * t)) if flashing(t) else 0
            out.extend((v, v))
        return out.tobytes()

    return pcm


class _VideoSource:
    """A continuing encoder: ``packets(n)`` gives the first n encoded frames (cached)."""

    def __init__(self, codec: str, painter: Callable[[int], Planes] | None = None) -> None:
        name = {"video/VP8": "libvpx", "video/H264": "libx264"}[codec]
        cc = av.CodecContext.create(name, "w")
        cc.width, cc.height, cc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        cc.time_base = Fraction(1, FPS)
        cc.framerate = FPS
        cc.gop_size = GOP
        cc.bit_rate = 400_000
        if name == "libvpx":
            cc.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "auto-alt-ref": "0",
                "drop-frame": "0",
                "kf-min-dist": str(GOP),
            }
        else:
            cc.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
        self.cc = cc
        self.out: list[tuple[bool, bytes]] = []
        self._planes = [bytes((x + s * 7) & 255 for x in range(WIDTH)) * HEIGHT for s in range(30)]
        self._painter = painter or self._pattern
        self._n = 0

    def _pattern(self, i: int) -> Planes:
        return (
            self._planes[i % len(self._planes)],
            bytes([128]) * (WIDTH * HEIGHT // 4),
            bytes([(i * 3) & 255]) * (WIDTH * HEIGHT // 4),
        )

    def packets(self, n: int) -> list[tuple[bool, bytes]]:
        while len(self.out) < n:
            i = self._n
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            for plane, data in zip(frame.planes, self._painter(i), strict=True):
                plane.update(data)
            frame.pts = i
            self._n += 1
            for p in self.cc.encode(frame):
                self.out.append((bool(p.is_keyframe), bytes(p)))
        return self.out[:n]


class _AudioSource:
    def __init__(self, pcm_of: Callable[[int], bytes] | None = None) -> None:
        cc = av.CodecContext.create("libopus", "w")
        cc.sample_rate = AUDIO_CLOCK
        cc.layout = "stereo"
        cc.format = "s16"
        cc.time_base = Fraction(1, AUDIO_CLOCK)
        self.cc = cc
        # 400 Hz: exactly 8 periods per 20 ms frame, so repeating one frame is a clean tone.
        pcm = array.array("h")
        for n in range(AUDIO_FRAME):
            v = int(6000 * math.sin(2 * math.pi * 400 * n / AUDIO_CLOCK))
            pcm.extend((v, v))
        self._pcm = pcm.tobytes()
        self._pcm_of = pcm_of or (lambda j: self._pcm)
        self.out: list[bytes] = []
        self._n = 0

    def packets(self, n: int) -> list[bytes]:
        while len(self.out) < n:
            frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_FRAME)
            frame.planes[0].update(self._pcm_of(self._n))
            frame.sample_rate = AUDIO_CLOCK
            frame.pts = self._n * AUDIO_FRAME
            self._n += 1
            self.out.extend(bytes(p) for p in self.cc.encode(frame))
        return self.out[:n]


_video: dict[object, _VideoSource | _NoiseSource] = {}
_audio: list[_AudioSource] = []


class _NoiseSource:
    """One second of noise at a high bit rate (large frames), encoded once and repeated: each
    repetition starts with its key frame, so any number of frames is a valid stream."""

    def __init__(self, codec: str) -> None:
        rng = random.Random(5)
        frames = [
            (rng.randbytes(WIDTH * HEIGHT), rng.randbytes(WIDTH * HEIGHT // 4)) for _ in range(4)
        ]
        src = _VideoSource(codec, lambda i: (frames[i % 4][0], frames[i % 4][1], frames[i % 4][1]))
        src.cc.bit_rate = 30_000_000
        self.gop = src.packets(GOP)

    def packets(self, n: int) -> list[tuple[bool, bytes]]:
        return [self.gop[i % GOP] for i in range(n)]


def _video_for(spec: ParticipantSpec, session: SessionSpec) -> _VideoSource | _NoiseSource:
    assert spec.video is not None
    if spec.content == "pattern":
        return _video.setdefault(spec.video, _VideoSource(spec.video))
    if spec.content == "noise":
        key = (spec.video, "noise")
        if key not in _video:
            _video[key] = _NoiseSource(spec.video)
        return _video[key]
    if spec.content == "flash":
        return _VideoSource(spec.video, flash_painter(session.start_s))
    assert isinstance(spec.content, tuple)
    key = (spec.video, spec.content)
    return _video.setdefault(key, _VideoSource(spec.video, color_painter(*spec.content)))


def _audio_for(spec: ParticipantSpec, session: SessionSpec, lag_s: float) -> _AudioSource:
    if spec.content == "flash":
        return _AudioSource(beep_pcm(session.start_s + lag_s))
    if not _audio:
        _audio.append(_AudioSource())
    return _audio[0]


def _jump(spec: ParticipantSpec, kind: str, rel_s: float) -> int:
    return sum(ticks for k, at, ticks in spec.rtp_jumps if k == kind and rel_s >= at)


def _lost(spec: ParticipantSpec, kind: str, rel_s: float) -> bool:
    return any(k == kind and a <= rel_s < b for k, a, b in spec.lost)


def video_packets(n: int, codec: str = "video/VP8") -> list[tuple[bool, bytes]]:
    if codec not in _video:
        _video[codec] = _VideoSource(codec)
    return _video[codec].packets(n)


def audio_packets(n: int) -> list[bytes]:
    if not _audio:
        _audio.append(_AudioSource())
    return _audio[0].packets(n)


# -- the capture ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSpec:
    start_s: float = 0.0  # from the recording's start
    duration_s: float = 5.0


@dataclass(frozen=True)
class ParticipantSpec:
    participant_id: str
    sessions: tuple[SessionSpec, ...] = (SessionSpec(),)
    video: str | None = "video/VP8"
    audio: str | None = "audio/opus"
    display_name: str = ""
    # What the camera and microphone capture: "pattern" (a moving gradient and a 400 Hz tone),
    # "flash" (dark, with a white frame and a 1 kHz beep at every FLASH_PERIOD_S of wall clock),
    # "noise" (large frames: a repeated second of noise at 30 Mb/s, with the tone),
    # or a solid colour given as (Y, U, V) with the tone.
    content: str | tuple[int, int, int] = "pattern"
    audio_offset_s: float | None = None  # audio's first frame after the session start (lag)
    # Network + jitter buffer: how long after capture each frame reaches the proxy's clock.
    video_delay_ms: float = 0.0
    audio_delay_ms: float = 0.0
    first_keyframe_extra_ms: float = 0.0  # a large first key frame arrives later still
    # Frames never received: (kind, from_s, to_s) in seconds from the recording's start.
    lost: tuple[tuple[str, float, float], ...] = ()
    # Video segments (by seq) whose opening key frame was lost: they start with delta frames.
    lost_segment_keyframes: tuple[int, ...] = ()
    # The sender's RTP clock jumps: (kind, at_s, ticks) from the recording's start on.
    rtp_jumps: tuple[tuple[str, float, int], ...] = ()
    # RTCP sender reports, one a second per track, as aiortc sends them: the RTP time of the
    # latest frame against the sender's wall clock when it was sent (``sender_clock_offset_s``
    # away from the proxy's, plus a send delay of 2 to 9 ms).
    sender_reports: bool = False
    sender_clock_offset_s: float = 3.7
    video_clock_ppm: float = 0.0  # the camera's RTP clock runs this much fast


@dataclass
class CapturedTrack:
    participant_id: str
    session_id: str
    track_id: str
    kind: str
    codec: str
    first_wallclock_ns: int
    end_wallclock_ns: int  # last frame's wall clock plus one frame duration
    frames: int
    segments: list[cap.SegmentWritten] = field(default_factory=list)


@dataclass
class Capture:
    recording_id: str
    tenant_id: str
    backup_root: Path
    rec_dir: Path
    events: list[Event]
    tracks: list[CapturedTrack]
    participants: list[ParticipantSpec]
    key: bytes
    stored_sha256: dict[str, str]  # segment path -> SHA-256 of its bytes on disk (ciphertext)

    @property
    def files(self) -> RecordingFiles:
        return RecordingFiles(self.rec_dir, self.recording_id, self.key)

    @property
    def segments(self) -> list[cap.SegmentWritten]:
        return [e for e in self.events if isinstance(e, cap.SegmentWritten)]

    @property
    def closed(self) -> cap.CaptureClosed:
        (closed,) = [e for e in self.events if isinstance(e, cap.CaptureClosed)]
        return closed

    def tracks_of(self, participant_id: str) -> list[CapturedTrack]:
        return [t for t in self.tracks if t.participant_id == participant_id]

    def span_s(self, participant_id: str) -> float:
        """Wall-clock time from the participant's first captured frame to the end of the last."""
        tracks = self.tracks_of(participant_id)
        start = min(t.first_wallclock_ns for t in tracks)
        end = max(t.end_wallclock_ns for t in tracks)
        return (end - start) / 1e9

    def call_span_s(self) -> float:
        """Wall-clock time from the call's first captured frame to the end of its last."""
        start = min(t.first_wallclock_ns for t in self.tracks)
        end = max(t.end_wallclock_ns for t in self.tracks)
        return (end - start) / 1e9

    def segment_path(self, seg: cap.SegmentWritten) -> Path:
        return self.rec_dir / seg.path


def _sender_reports(
    spec: ParticipantSpec, captured: list[tuple[int, int]], *, every: int
) -> list[tuple[int, int]]:
    """(rtp_ts, ntp_unix_ns) every ``every`` frames of ``captured`` ((capture ns, rtp_ts)
    pairs): the sender's clock at sending, ``sender_clock_offset_s`` off the proxy's."""
    if not spec.sender_reports:
        return []
    assert not spec.lost and not spec.rtp_jumps, "sender reports assume every frame, one clock"
    offset = int(spec.sender_clock_offset_s * 1e9)
    return [
        (rtp, wall + offset + (2 + (n * 7) % 8) * 1_000_000)
        for n, (wall, rtp) in enumerate(captured[::every])
    ]


def _write_track(
    rec_dir: Path,
    rid: str,
    tenant: str,
    pid: str,
    session_id: str,
    kind: str,
    codec: str,
    frames: list[Frame],
    clock_rate: int,
    segment_s: float,
    key: bytes,
    stored: dict[str, str],
    lost_segment_keyframes: tuple[int, ...] = (),
    sender_reports: list[tuple[int, int]] | None = None,
) -> tuple[CapturedTrack, list[Event]]:
    track_id = f"{pid}-{session_id}-{kind}"
    channels = 2 if kind == "audio" else 0
    frame_ns = 1_000_000_000 // FPS if kind == "video" else 20_000_000
    track = CapturedTrack(
        participant_id=pid,
        session_id=session_id,
        track_id=track_id,
        kind=kind,
        codec=codec,
        first_wallclock_ns=frames[0].wallclock_ns,
        end_wallclock_ns=frames[-1].wallclock_ns + frame_ns,
        frames=len(frames),
    )
    events: list[Event] = [
        cap.TrackStarted(
            event_id=event_id(rid, "track_started", track_id),
            recording_id=rid,
            tenant_id=tenant,
            occurred_at=now(),
            participant_id=pid,
            session_id=session_id,
            track_id=track_id,
            kind="audio" if kind == "audio" else "video",
            codec=codec,
            clock_rate=clock_rate,
            channels=channels,
            first_frame_wallclock_ns=frames[0].wallclock_ns,
        )
    ]
    folder = capture_dir(rec_dir, pseudonym(key, pid), pseudonym(key, track_id))
    seq = 0
    writer: SegmentWriter | None = None

    def finish(w: SegmentWriter, seq: int) -> None:
        w.close()
        stored[w.path.relative_to(rec_dir).as_posix()] = w.stored.sha256
        s = w.stats
        event = cap.SegmentWritten(
            event_id=event_id(rid, "segment", track_id, seq),
            recording_id=rid,
            tenant_id=tenant,
            occurred_at=now(),
            participant_id=pid,
            track_id=track_id,
            kind="audio" if kind == "audio" else "video",
            seq=seq,
            path=w.path.relative_to(rec_dir).as_posix(),
            sha256=w.digest.sha256,
            size=w.digest.size,
            frames=s.frames,
            first_rtp_ts=s.first_rtp_ts,
            last_rtp_ts=s.last_rtp_ts,
            first_wallclock_ns=s.first_wallclock_ns,
            last_wallclock_ns=s.last_wallclock_ns,
            keyframes=s.keyframes,
            sender_reports=tuple(
                r for r in sender_reports or () if s.first_rtp_ts <= r[0] <= s.last_rtp_ts
            ),
        )
        track.segments.append(event)
        events.append(event)

    for frame in frames:
        elapsed = writer is not None and (
            frame.rtp_ts - writer.stats.first_rtp_ts >= segment_s * clock_rate
        )
        # Like the proxy: video segments start at a key frame.
        if writer is not None and elapsed and (kind == "audio" or frame.keyframe):
            finish(writer, seq)
            seq += 1
            writer = None
            if seq in lost_segment_keyframes:
                continue  # the key frame that opened this segment never arrived
        if writer is None:
            header = SegmentHeader(
                recording_id=rid,
                track_id=track_id,
                kind=kind,
                codec=codec,
                clock_rate=clock_rate,
                channels=channels,
                seq=seq,
                participant_id=pid,
                session_id=session_id,
            )
            path = folder / segment_name(seq)
            name = path.relative_to(rec_dir).as_posix()
            writer = SegmentWriter(path, header, key=key, name=name)
        writer.append(frame)
    assert writer is not None
    finish(writer, seq)
    events.append(
        cap.TrackEnded(
            event_id=event_id(rid, "track_ended", track_id),
            recording_id=rid,
            tenant_id=tenant,
            occurred_at=now(),
            participant_id=pid,
            track_id=track_id,
            segments=seq + 1,
            frames=len(frames),
        )
    )
    return track, events


def make_capture(
    backup_root: Path,
    participants: Iterable[ParticipantSpec],
    *,
    segment_s: float = 2.0,
    recording_id: str | None = None,
    tenant_id: str | None = None,
    start_ns: int | None = None,
    audio_lag_s: float = 0.04,
    key: bytes | bytearray | None = None,
) -> Capture:
    """Write every participant's segments and return the events the proxy would have published
    (in a plausible order, ``capture.closed`` last)."""
    rid = recording_id or new_recording_id()
    tenant = tenant_id or new_tenant_id()
    rec_dir = recording_dir(backup_root, tenant, rid)
    base = start_ns if start_ns is not None else 1_780_000_000_000_000_000
    data_key = bytes(key) if key is not None else secrets.token_bytes(32)
    stored: dict[str, str] = {}
    specs = list(participants)
    events: list[Event] = []
    tracks: list[CapturedTrack] = []
    for spec in specs:
        for n, session in enumerate(spec.sessions, 1):
            session_id = f"s{n}"
            t_start = base + int(session.start_s * 1e9)
            events.append(
                cap.ParticipantJoined(
                    event_id=event_id(rid, "participant_joined", f"{spec.participant_id}-{n}"),
                    recording_id=rid,
                    tenant_id=tenant,
                    occurred_at=now(),
                    participant_id=spec.participant_id,
                    session_id=session_id,
                    display_name=spec.display_name or spec.participant_id.title(),
                    joined_at_ns=t_start - 300_000_000,
                )
            )
            if spec.video:
                count = round(session.duration_s * FPS)
                packets = _video_for(spec, session).packets(count)
                delay = int(spec.video_delay_ms * 1e6)
                frames = [
                    Frame(
                        rtp_ts=round(i * (VIDEO_CLOCK // FPS) * (1 + spec.video_clock_ppm * 1e-6))
                        + _jump(spec, "video", session.start_s + i / FPS),
                        # a little arrival jitter, as on a real network
                        wallclock_ns=t_start
                        + i * 1_000_000_000 // FPS
                        + (i % 3) * 1_000_000
                        + delay
                        + (int(spec.first_keyframe_extra_ms * 1e6) if i == 0 else 0),
                        keyframe=key,
                        data=data,
                    )
                    for i, (key, data) in enumerate(packets)
                    if not _lost(spec, "video", session.start_s + i / FPS)
                ]
                reports = _sender_reports(
                    spec, [(i * 1_000_000_000 // FPS + t_start, f.rtp_ts)
                           for i, f in enumerate(frames)], every=FPS,
                )  # fmt: skip
                track, evs = _write_track(
                    rec_dir, rid, tenant, spec.participant_id, session_id, "video",
                    spec.video, frames, VIDEO_CLOCK, segment_s, data_key, stored,
                    spec.lost_segment_keyframes, reports,
                )  # fmt: skip
                tracks.append(track)
                events.extend(evs)
            if spec.audio:
                count = round(session.duration_s * 50)
                lag = audio_lag_s if spec.audio_offset_s is None else spec.audio_offset_s
                a_start = t_start + int(lag * 1e9)
                delay = int(spec.audio_delay_ms * 1e6)
                frames = [
                    Frame(
                        rtp_ts=i * AUDIO_FRAME
                        + _jump(spec, "audio", session.start_s + lag + i * 0.02),
                        wallclock_ns=a_start + i * 20_000_000 + (i % 2) * 500_000 + delay,
                        keyframe=True,
                        data=data,
                    )
                    for i, data in enumerate(_audio_for(spec, session, lag).packets(count))
                    if not _lost(spec, "audio", session.start_s + lag + i * 0.02)
                ]
                reports = _sender_reports(
                    spec, [(a_start + i * 20_000_000, f.rtp_ts)
                           for i, f in enumerate(frames)], every=50,
                )  # fmt: skip
                track, evs = _write_track(
                    rec_dir, rid, tenant, spec.participant_id, session_id, "audio",
                    spec.audio, frames, AUDIO_CLOCK, segment_s, data_key, stored,
                    (), reports,
                )  # fmt: skip
                tracks.append(track)
                events.extend(evs)
            end_ns = max(t.end_wallclock_ns for t in tracks if t.session_id == session_id
                         and t.participant_id == spec.participant_id)  # fmt: skip
            events.append(
                cap.ParticipantLeft(
                    event_id=event_id(rid, "participant_left", f"{spec.participant_id}-{n}"),
                    recording_id=rid,
                    tenant_id=tenant,
                    occurred_at=now(),
                    participant_id=spec.participant_id,
                    session_id=session_id,
                    reason="left",
                    left_at_ns=end_ns + 200_000_000,
                )
            )
    segments = sum(1 for e in events if isinstance(e, cap.SegmentWritten))
    events.append(
        cap.CaptureClosed(
            event_id=event_id(rid, "capture_closed"),
            recording_id=rid,
            tenant_id=tenant,
            occurred_at=now(),
            segments=segments,
            tracks=len(tracks),
        )
    )
    return Capture(rid, tenant, backup_root, rec_dir, events, tracks, specs, data_key, stored)


async def publish_capture(
    js: JetStreamContext, capture: Capture, *, events: Iterable[Event] | None = None
) -> None:
    """Publish the capture's events (or the given subset) in order, as the proxy would."""
    for event in capture.events if events is None else events:
        await natsio.publish(js, event)
