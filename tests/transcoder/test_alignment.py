"""Alignment: a publisher flashes a white frame and beeps at the same instant every 2 s of wall
clock; in the output, each participant's flash and beep, and every participant's flashes, land
within 100 ms of each other.

The capture is what a real network gives the proxy: audio and video tracks that start at
different wall-clock times (audio late for one, early for another), different arrival delays per
track, a first key frame that arrives 150 ms late, and participants who join at different times.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.transcoder.output import build_output
from services.transcoder.plan import OutputOptions, plan_files
from services.transcoder.state import fold

from .capture_factory import FLASH_PERIOD_S, ParticipantSpec, SessionSpec, make_capture
from .media_probe import beep_onsets, flash_times, probe
from .sealed import opened

KEY = Ed25519PrivateKey.generate()
LIMIT_S = 0.100
BASE_NS = 1_780_000_000_000_000_000

PUBLISHERS = [
    ParticipantSpec(
        "alice",
        sessions=(SessionSpec(0.0, 9.2),),
        content="flash",
        audio_offset_s=0.37,  # the microphone's first frame comes 370 ms after the camera's
        video_delay_ms=70,
        audio_delay_ms=40,
        first_keyframe_extra_ms=150,
    ),
    ParticipantSpec(
        "bob",
        sessions=(SessionSpec(0.9, 8.3),),
        content="flash",
        audio_offset_s=-0.25,  # the microphone starts before the camera
        video_delay_ms=85,
        audio_delay_ms=30,
        first_keyframe_extra_ms=120,
    ),
    ParticipantSpec(
        "carol",
        sessions=(SessionSpec(1.3, 7.9),),
        video="video/H264",
        content="flash",
        audio_offset_s=0.11,
        video_delay_ms=60,
        audio_delay_ms=50,
    ),
]


@pytest.mark.parametrize("output_format", ["webm", "mp4"])
def test_flash_and_beep_align_within_100ms(tmp_path: Path, output_format: str) -> None:
    c = make_capture(tmp_path, PUBLISHERS, segment_s=2.0, start_ns=BASE_NS)
    state = fold(c.events)
    options = OutputOptions(output_format)
    sealed = build_output(
        c.rec_dir, state, plan_files(state, options), key=c.key, signing_key=KEY, options=options
    )
    sealed = opened(c, sealed)
    manifest = json.loads((sealed.output / "manifest.json").read_text())
    absolute: dict[str, list[float]] = {}
    for entry in manifest["files"]:
        path = sealed.output / entry["name"]
        assert probe(path).errors == []
        flashes, beeps = flash_times(path), beep_onsets(path)
        # Every flash of the publisher's session is seen and heard: 2, 4, 6 and 8 s.
        assert len(flashes) == 4, (entry["name"], flashes)
        assert len(beeps) == 4, (entry["name"], beeps)
        for flash, beep in zip(flashes, beeps, strict=True):
            assert abs(flash - beep) <= LIMIT_S, (entry["name"], flash, beep)
        zero_s = (entry["starts_at_ns"] - BASE_NS) / 1e9
        absolute[entry["participant_id"]] = [zero_s + f for f in flashes]
    # Across participants: the same flash lands at the same wall-clock time in every file.
    for k in range(4):
        times = [flashes[k] for flashes in absolute.values()]
        assert max(times) - min(times) <= LIMIT_S, (k, absolute)
        # ...and where the publisher flashed, give or take the network's delay.
        mark = (k + 1) * FLASH_PERIOD_S
        assert all(-LIMIT_S <= t - mark <= LIMIT_S for t in times), (mark, times)


def test_each_track_keeps_its_own_wall_clock_anchor(tmp_path: Path) -> None:
    """Audio first, video 250 ms later: the file starts with audio and video starts at 250 ms;
    a late first key frame does not push the whole video track late."""
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec(
                "bob",
                sessions=(SessionSpec(0, 3),),
                audio_offset_s=-0.25,
                first_keyframe_extra_ms=180,
            )
        ],
        start_ns=BASE_NS,
    )
    (plan,) = plan_files(fold(c.events))
    video, audio = plan.streams
    assert plan.t0_ns == BASE_NS - 250_000_000  # the microphone's first frame
    assert audio.tracks[0].start_ms == 0
    assert video.tracks[0].start_ms == 250  # not 430: the key frame's extra delay is ignored
