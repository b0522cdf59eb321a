"""A/V alignment by the sender's own clock (RTCP sender reports), and drift correction.

- On decoded output (the participant's file and the composite): a flash-and-beep participant
  whose camera frames reach the proxy 160 ms later than its microphone's, and whose audio starts
  300 ms after its video. Placed by arrival, the flash and the beep are ~150 ms apart (the
  control: this test can fail); placed by the sender reports, within 10 ms, and the manifest
  says which way each track was placed.
- On the plan (pure, no media): a 30-minute call whose camera clock runs 100 ppm fast (180 ms by
  the end) ends with audio and video within 2 ms; without reports it would not.
- The fit itself: delayed and late reports, a rate no clock has, reports that disagree with
  arrival by seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.transcoder import clocks
from services.transcoder.composite import plan_composite
from services.transcoder.output import build_output
from services.transcoder.plan import OutputOptions, TrackPlan, plan_files, rtp_to_ms
from services.transcoder.state import RecordingCapture, Segment, Track, fold
from shared.events import captures as cap
from shared.events import event_id, now

from .capture_factory import ParticipantSpec, SessionSpec, make_capture
from .media_probe import beep_onsets, flash_times
from .sealed import opened

KEY = Ed25519PrivateKey.generate()
BASE_NS = 1_780_000_000_000_000_000


def _late_camera(*, reports: bool) -> ParticipantSpec:
    return ParticipantSpec(
        "dana",
        sessions=(SessionSpec(0.0, 9.0),),
        content="flash",
        audio_offset_s=0.3,  # the microphone's first frame 300 ms after the camera's
        video_delay_ms=160,  # every camera frame reaches the proxy 160 ms after capture
        audio_delay_ms=10,
        sender_reports=reports,
    )


def _offsets(tmp_path: Path, spec: ParticipantSpec) -> tuple[list[float], list[dict[str, object]]]:
    """Beep minus flash per flash, in the participant's file and in the composite (one list:
    they must agree), and the manifest's entries for the participant's tracks."""
    c = make_capture(tmp_path, [spec], segment_s=2.0, start_ns=BASE_NS)
    state = fold(c.events)
    options = OutputOptions()
    plans = plan_files(state, options)
    sealed = opened(
        c,
        build_output(
            c.rec_dir,
            state,
            plans,
            key=c.key,
            signing_key=KEY,
            composite=plan_composite(plans, options),
        ),
    )
    manifest = json.loads((sealed.output / "manifest.json").read_text())
    (entry,) = [f for f in manifest["files"] if f["participant_id"] == "dana"]
    offsets = []
    for name in (entry["name"], "composite.webm"):
        path = sealed.output / name
        flashes, beeps = flash_times(path), beep_onsets(path)
        assert len(flashes) == len(beeps) == 4, (name, flashes, beeps)
        offsets += [b - f for f, b in zip(flashes, beeps, strict=True)]
    return offsets, entry["tracks"]


def test_sender_reports_align_what_arrival_cannot(tmp_path: Path) -> None:
    by_arrival, tracks = _offsets(tmp_path / "arrival", _late_camera(reports=False))
    assert {t["alignment"] for t in tracks} == {"arrival"}
    assert max(abs(o) for o in by_arrival) > 0.1, by_arrival  # the camera's delay shows

    by_sender, tracks = _offsets(tmp_path / "sender", _late_camera(reports=True))
    assert {t["alignment"] for t in tracks} == {"sender_report"}
    assert all("clock_drift_ppm" in t for t in tracks)
    assert max(abs(o) for o in by_sender) <= 0.010, by_sender


# -- 30 minutes, on the plan ------------------------------------------------------------------

MINUTES = 30
PPM = 100.0


def _long_call(*, reports: bool) -> RecordingCapture:
    """Segment facts (no media files: planning reads none) of one participant's 30-minute call;
    reports as aiortc sends them, each 2 to 9 ms after its frame, the camera 100 ppm fast."""
    rid, tenant, pid, sid = "rec_long", "ten_long", "erin", "s1"
    events: list[cap.Event] = []
    for kind, rate, frame_ticks, fps, ppm in (
        ("video", 90_000, 3000, 30, PPM),
        ("audio", 48_000, 960, 50, 0.0),
    ):
        tid = f"{pid}-{sid}-{kind}"
        start = BASE_NS + (300_000_000 if kind == "audio" else 0)
        delay = 150_000_000 if kind == "video" else 10_000_000
        events.append(
            cap.TrackStarted(
                event_id=event_id(rid, "track", tid),
                recording_id=rid,
                tenant_id=tenant,
                occurred_at=now(),
                participant_id=pid,
                session_id=sid,
                track_id=tid,
                kind=kind,  # type: ignore[arg-type]
                codec="video/VP8" if kind == "video" else "audio/opus",
                clock_rate=rate,
                first_frame_wallclock_ns=start + delay,
            )
        )
        per_segment = 10 * fps
        for seq in range(MINUTES * 6):
            first, last = seq * per_segment, (seq + 1) * per_segment - 1

            def rtp(i: int, ticks: int = frame_ticks, fast: float = ppm) -> int:
                return round(i * ticks * (1 + fast * 1e-6))

            def captured(i: int, fps: int = fps, start: int = start) -> int:
                return start + i * 1_000_000_000 // fps

            sr = tuple(
                (rtp(i), captured(i) + 5_000_000_000 + (2 + (i * 7) % 8) * 1_000_000)
                for i in range(first, last + 1, fps)
            )
            events.append(
                cap.SegmentWritten(
                    event_id=event_id(rid, "segment", tid, seq),
                    recording_id=rid,
                    tenant_id=tenant,
                    occurred_at=now(),
                    participant_id=pid,
                    track_id=tid,
                    kind=kind,  # type: ignore[arg-type]
                    seq=seq,
                    path=f"{tid}/{seq}.seg",
                    sha256="0" * 64,
                    size=1,
                    frames=per_segment,
                    first_rtp_ts=rtp(first),
                    last_rtp_ts=rtp(last),
                    first_wallclock_ns=captured(first) + delay,
                    last_wallclock_ns=captured(last) + delay,
                    sender_reports=sr if reports else (),
                )
            )
    return fold(events)


def _end_offset_ms(state: RecordingCapture) -> int:
    """Video minus audio file time of the frames captured at the same instant, 29:50 in."""
    (plan,) = plan_files(state)
    by_kind: dict[str, TrackPlan] = {s.kind: s.tracks[0] for s in plan.streams}
    at_s = MINUTES * 60 - 10
    video = rtp_to_ms(by_kind["video"], round(at_s * 30 * 3000 * (1 + PPM * 1e-6)))
    audio = rtp_to_ms(by_kind["audio"], round((at_s - 0.3) * 48_000))
    return video - audio


def test_a_fast_camera_clock_is_corrected_over_30_minutes() -> None:
    assert abs(_end_offset_ms(_long_call(reports=True))) <= 2
    # The control: by arrival and nominal rates the same call is off by the camera's delay
    # plus 100 ppm of 30 minutes.
    assert _end_offset_ms(_long_call(reports=False)) >= 140 + 170


# -- the fit ----------------------------------------------------------------------------------


def _reports(seconds: int, ppm: float, delays_ms: list[float]) -> list[tuple[int, int]]:
    return [
        (round(s * 90_000 * (1 + ppm * 1e-6)), BASE_NS + s * 1_000_000_000 + int(d * 1e6))
        for s, d in zip(range(seconds), delays_ms * seconds, strict=False)
    ]


def test_the_fit_takes_the_least_delayed_reports() -> None:
    # Send delays of 3 to 40 ms, and one report in nine a whole 400 ms late.
    delays = [3, 12, 7, 40, 5, 22, 400, 9, 3]
    clock = clocks.fit_sender_clock(_reports(600, 100.0, delays), 90_000)
    assert clock is not None and clock.rate_fitted
    assert abs(clock.drift_ppm - 100.0) < 5, clock.drift_ppm
    # RTP 0 was captured at BASE_NS: the origin is the least delayed report's, 3 ms.
    assert abs(clock.at(0) - BASE_NS - 3e6) < 1e6


def test_a_short_span_or_an_impossible_rate_keeps_the_nominal_rate() -> None:
    short = clocks.fit_sender_clock(_reports(10, 100.0, [5]), 90_000)
    assert short is not None and not short.rate_fitted and short.ns_per_tick == 1e9 / 90_000
    wild = clocks.fit_sender_clock(_reports(120, 5000.0, [5]), 90_000)
    assert wild is not None and not wild.rate_fitted
    assert clocks.fit_sender_clock([], 90_000) is None


def _track(kind: str, first_wall: int) -> Track:
    return Track(f"t-{kind}", "p", "s1", kind, "audio/opus", 48_000, 2, first_wall)


def _segment(kind: str, wall: int, reports: tuple[tuple[int, int], ...]) -> Segment:
    return Segment(f"t-{kind}", 0, "x", "0", 1, 50, 0, 47_040, wall, wall + 980_000_000, reports)


def test_reports_far_from_arrival_are_not_believed() -> None:
    # The audio's reports put it 3 s from where its frames arrived (another clock): neither
    # track of the session is placed by reports then.
    video = (_track("video", BASE_NS), [_segment("video", BASE_NS, ((0, BASE_NS),))])
    audio = (
        _track("audio", BASE_NS),
        [_segment("audio", BASE_NS, ((0, BASE_NS + 3_000_000_000),))],
    )
    anchors = clocks.track_anchors([video, audio])
    assert {a.source for a in anchors.values()} == {"arrival"}
    near = (_track("audio", BASE_NS), [_segment("audio", BASE_NS, ((0, BASE_NS + 20_000_000),))])
    anchors = clocks.track_anchors([video, near])
    assert {a.source for a in anchors.values()} == {"sender_report"}
    # Placed by the reports: the audio 20 ms after the video, though both arrived together.
    assert anchors["t-audio"].wall_ns - anchors["t-video"].wall_ns == 20_000_000
