"""Loss and gaps: lost frames, a segment whose opening key frame was lost, a reconnect and an RTP
clock that jumps each give a file that decodes without one error and lasts as long as the wall
clock says (±2%): never hours of silence, never frozen or reordered timestamps."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.transcoder.output import build_output
from services.transcoder.plan import OutputOptions, plan_files
from services.transcoder.state import fold

from .capture_factory import Capture, ParticipantSpec, SessionSpec, make_capture
from .media_probe import Probe, probe
from .sealed import opened

KEY = Ed25519PrivateKey.generate()
CODECS = ["video/VP8", "video/H264"]


def _build(c: Capture, options: OutputOptions | None = None) -> Path:
    state = fold(c.events)
    sealed = build_output(
        c.rec_dir, state, plan_files(state, options), key=c.key, signing_key=KEY, options=options
    )
    sealed = opened(c, sealed)
    (media,) = [f for f in sealed.files if f.role == "media" and f.participant_id]
    return sealed.output / media.name


def _check(c: Capture, path: Path, pid: str = "alice") -> Probe:
    p = probe(path)
    assert p.errors == [], p.errors[:5]
    assert p.strictly_increasing()
    span = c.span_s(pid)
    assert abs(p.duration_s - span) <= 0.02 * span, (p.duration_s, span)
    return p


def _video_packets(path: Path) -> list[tuple[float, bool]]:
    """(time s, key frame) of every video packet."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (float(p.pts * stream.time_base), p.is_keyframe)
            for p in container.demux(stream)
            if p.pts is not None
        ]


@pytest.mark.parametrize("codec", CODECS)
def test_lost_frames_resume_at_the_next_key_frame(tmp_path: Path, codec: str) -> None:
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec(
                "alice",
                sessions=(SessionSpec(0, 8),),
                video=codec,
                # 3.2-3.9 s of video and 5.1-5.6 s of audio never arrived.
                lost=(("video", 3.2, 3.9), ("audio", 5.1, 5.6)),
            )
        ],
    )
    path = _build(c)
    p = _check(c, path)
    video = _video_packets(path)
    after = [(t, key) for t, key in video if t > 3.18]
    # Nothing between the loss and the next key frame (4.0 s, one per second), which leads.
    assert after[0][1] and abs(after[0][0] - 4.0) < 0.02, after[:3]
    assert len(video) == 8 * 30 - 24  # 21 lost, and the 3 after them until the key frame
    audio_index = next(i for i, (kind, _) in enumerate(p.streams) if kind == "audio")
    assert 0.45 <= p.largest_gap_s(audio_index) <= 0.55  # the audio gap stays a gap


@pytest.mark.parametrize("codec", CODECS)
def test_segment_without_its_key_frame_waits_for_the_next(tmp_path: Path, codec: str) -> None:
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec(
                "alice", sessions=(SessionSpec(0, 6),), video=codec, lost_segment_keyframes=(1,)
            )
        ],
        segment_s=2.0,
    )
    second = [s for s in c.segments if s.kind == "video"][1]
    assert second.first_rtp_ts == 61 * 3000  # frame 60, its key frame, never arrived
    path = _build(c)
    _check(c, path)
    video = _video_packets(path)
    assert not [t for t, _ in video if 1.99 < t < 2.99]  # 2.03-2.97 s could not be decoded
    resumed = next((t, key) for t, key in video if t >= 2.99)
    assert resumed[1] and abs(resumed[0] - 3.0) < 0.02


@pytest.mark.parametrize("output_format", ["webm", "mp4"])
def test_reconnect_keeps_the_gap(tmp_path: Path, output_format: str) -> None:
    c = make_capture(
        tmp_path,
        [ParticipantSpec("alice", sessions=(SessionSpec(0, 4), SessionSpec(6.5, 4)))],
    )
    path = _build(c, OutputOptions(output_format))
    p = _check(c, path)
    assert 10.4 < c.span_s("alice") < 10.7
    video = next(i for i, (kind, _) in enumerate(p.streams) if kind == "video")
    assert 2.4 <= p.largest_gap_s(video) <= 2.6  # the picture pauses for as long as he was away


def test_rtp_clock_jump_does_not_make_hours_of_silence(tmp_path: Path) -> None:
    hour = 3600
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec(
                "alice",
                sessions=(SessionSpec(0, 6),),
                # At 3 s the sender's clocks leap an hour ahead (a restart, a bad unwrap).
                rtp_jumps=(("video", 3.0, hour * 90_000), ("audio", 3.0, hour * 48_000)),
            )
        ],
    )
    path = _build(c)
    p = _check(c, path)
    for index in range(len(p.streams)):
        assert p.largest_gap_s(index) < 0.1
