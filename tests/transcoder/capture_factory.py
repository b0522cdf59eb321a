"""Make a recording's capture the way the proxy would: real encoded VP8/H.264 and Opus frames in
segment files under the backup layout, plus the matching CAPTURES events.

Reusable by any test that needs a closed capture::

    cap = make_capture(backup_root, [ParticipantSpec("alice"), ParticipantSpec("bob")])
    await publish_capture(js, cap)
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from nats.js import JetStreamContext

from shared import natsio
from shared.backup import capture_dir, recording_dir, segment_name
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


class _VideoSource:
    """A continuing encoder: ``packets(n)`` gives the first n encoded frames (cached)."""

    def __init__(self, codec: str) -> None:
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
        self._n = 0

    def packets(self, n: int) -> list[tuple[bool, bytes]]:
        while len(self.out) < n:
            i = self._n
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            frame.planes[0].update(self._planes[i % len(self._planes)])
            frame.planes[1].update(bytes([128]) * (WIDTH * HEIGHT // 4))
            frame.planes[2].update(bytes([(i * 3) & 255]) * (WIDTH * HEIGHT // 4))
            frame.pts = i
            self._n += 1
            for p in self.cc.encode(frame):
                self.out.append((bool(p.is_keyframe), bytes(p)))
        return self.out[:n]


class _AudioSource:
    def __init__(self) -> None:
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
        self.out: list[bytes] = []
        self._n = 0

    def packets(self, n: int) -> list[bytes]:
        while len(self.out) < n:
            frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_FRAME)
            frame.planes[0].update(self._pcm)
            frame.sample_rate = AUDIO_CLOCK
            frame.pts = self._n * AUDIO_FRAME
            self._n += 1
            self.out.extend(bytes(p) for p in self.cc.encode(frame))
        return self.out[:n]


_video: dict[str, _VideoSource] = {}
_audio: list[_AudioSource] = []


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

    def segment_path(self, seg: cap.SegmentWritten) -> Path:
        return self.rec_dir / seg.path


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
    folder = capture_dir(rec_dir, pid, track_id)
    seq = 0
    writer: SegmentWriter | None = None

    def finish(w: SegmentWriter, seq: int) -> None:
        w.close()
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
        if writer is None:
            header = SegmentHeader(
                recording_id=rid,
                track_id=track_id,
                kind=kind,
                codec=codec,
                clock_rate=clock_rate,
                channels=channels,
                seq=seq,
            )
            writer = SegmentWriter(folder / segment_name(seq), header)
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
) -> Capture:
    """Write every participant's segments and return the events the proxy would have published
    (in a plausible order, ``capture.closed`` last)."""
    rid = recording_id or new_recording_id()
    tenant = tenant_id or new_tenant_id()
    rec_dir = recording_dir(backup_root, tenant, rid)
    base = start_ns if start_ns is not None else 1_780_000_000_000_000_000
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
                packets = video_packets(count, spec.video)
                frames = [
                    Frame(
                        rtp_ts=i * (VIDEO_CLOCK // FPS),
                        # a little arrival jitter, as on a real network
                        wallclock_ns=t_start + i * 1_000_000_000 // FPS + (i % 3) * 1_000_000,
                        keyframe=key,
                        data=data,
                    )
                    for i, (key, data) in enumerate(packets)
                ]
                track, evs = _write_track(
                    rec_dir, rid, tenant, spec.participant_id, session_id, "video",
                    spec.video, frames, VIDEO_CLOCK, segment_s,
                )  # fmt: skip
                tracks.append(track)
                events.extend(evs)
            if spec.audio:
                count = round(session.duration_s * 50)
                a_start = t_start + int(audio_lag_s * 1e9)
                frames = [
                    Frame(
                        rtp_ts=i * AUDIO_FRAME,
                        wallclock_ns=a_start + i * 20_000_000 + (i % 2) * 500_000,
                        keyframe=True,
                        data=data,
                    )
                    for i, data in enumerate(audio_packets(count))
                ]
                track, evs = _write_track(
                    rec_dir, rid, tenant, spec.participant_id, session_id, "audio",
                    spec.audio, frames, AUDIO_CLOCK, segment_s,
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
    return Capture(rid, tenant, backup_root, rec_dir, events, tracks, specs)


async def publish_capture(
    js: JetStreamContext, capture: Capture, *, events: Iterable[Event] | None = None
) -> None:
    """Publish the capture's events (or the given subset) in order, as the proxy would."""
    for event in capture.events if events is None else events:
        await natsio.publish(js, event)
