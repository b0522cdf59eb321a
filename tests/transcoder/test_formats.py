"""What the destination asks for: mp4 (H.264 passed through or VP8 re-encoded, Opus to AAC),
and audio-only or video-only files."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.transcoder.errors import PlanError
from services.transcoder.output import build_output
from services.transcoder.plan import OutputOptions, plan_files
from services.transcoder.state import fold

from .capture_factory import Capture, ParticipantSpec, SessionSpec, make_capture
from .media_probe import probe, x264_settings
from .sealed import opened

KEY = Ed25519PrivateKey.generate()


def _seal(c: Capture, options: OutputOptions) -> tuple[Path, dict[str, dict[str, object]]]:
    state = fold(c.events)
    sealed = build_output(
        c.rec_dir, state, plan_files(state, options), key=c.key, signing_key=KEY, options=options
    )
    sealed = opened(c, sealed)
    manifest = json.loads((sealed.output / "manifest.json").read_text())
    assert manifest["output"] == {"format": options.format, "tracks": options.tracks}
    return sealed.output, {f["name"]: f for f in manifest["files"]}


def _profile(path: Path) -> str:
    with av.open(str(path)) as container:
        return str(container.streams.video[0].codec_context.profile)


def test_mp4_passes_h264_through_and_reencodes_vp8_and_opus(tmp_path: Path) -> None:
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec("dana", sessions=(SessionSpec(0, 4),), video="video/H264"),
            ParticipantSpec("erin", sessions=(SessionSpec(0.4, 4),)),
        ],
    )
    out, files = _seal(c, OutputOptions("mp4"))
    assert sorted(files) == ["dana.mp4", "erin.mp4"]
    for name, pid in (("dana.mp4", "dana"), ("erin.mp4", "erin")):
        p = probe(out / name)
        assert p.errors == [] and p.strictly_increasing()
        assert dict(p.streams) == {"video": "h264", "audio": "aac"}
        assert p.frames["video"] == 120
        span = c.span_s(pid)
        assert abs(p.duration_s - span) <= 0.02 * span, (name, p.duration_s, span)
        assert files[name]["content_type"] == "video/mp4"
        assert files[name]["codecs"] == ["video/h264", "audio/aac"]
    # The captured H.264 (x264's baseline profile) is kept as it is; VP8 became a new
    # H.264 stream (veryfast's High profile).
    assert "Baseline" in _profile(out / "dana.mp4")
    assert "High" in _profile(out / "erin.mp4")


def test_reencoded_h264_is_encoded_as_the_ffmpeg_cli_would(tmp_path: Path) -> None:
    """x264 veryfast, CRF 23, no B-frames, frame threads (not PyAV's default sliced threads)."""
    c = make_capture(tmp_path, [ParticipantSpec("erin", sessions=(SessionSpec(0, 2),))])
    out, _ = _seal(c, OutputOptions("mp4"))
    settings = x264_settings(out / "erin.mp4")
    assert settings["sliced_threads"] == "0" and "slices" not in settings
    assert settings["bframes"] == "0" and settings["crf"] == "23.0"
    assert settings["subme"] == "2" and settings["rc_lookahead"] == "10"  # veryfast


@pytest.mark.parametrize(
    ("options", "name", "kinds", "content_type"),
    [
        (OutputOptions("webm", "audio"), "finn.webm", ["audio"], "audio/webm"),
        (OutputOptions("webm", "video"), "finn.webm", ["video"], "video/webm"),
        (OutputOptions("mp4", "audio"), "finn.mp4", ["audio"], "audio/mp4"),
        (OutputOptions("mp4", "video"), "finn.mp4", ["video"], "video/mp4"),
    ],
)
def test_audio_only_and_video_only_outputs(
    tmp_path: Path, options: OutputOptions, name: str, kinds: list[str], content_type: str
) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("finn", sessions=(SessionSpec(0, 3),))])
    out, files = _seal(c, options)
    assert list(files) == [name]
    p = probe(out / name)
    assert p.errors == [] and [kind for kind, _ in p.streams] == kinds
    assert files[name]["content_type"] == content_type
    sources = {s["path"] for s in files[name]["source_segments"]}  # type: ignore[attr-defined]
    assert sources == {s.path for s in c.segments if s.kind in kinds}


def test_video_only_output_skips_an_audio_only_participant(tmp_path: Path) -> None:
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec("gus", sessions=(SessionSpec(0, 1),), video=None),
            ParticipantSpec("hal", sessions=(SessionSpec(0, 1),)),
        ],
    )
    assert [p.name for p in plan_files(fold(c.events), OutputOptions("webm", "video"))] == [
        "hal.webm"
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (OutputOptions("avi"), "output format 'avi' is not one of webm, mp4"),
        (OutputOptions("webm", "subtitles"), "output tracks 'subtitles' is not one of"),
    ],
)
def test_unknown_choices_are_plan_errors(
    tmp_path: Path, options: OutputOptions, message: str
) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("ivy", sessions=(SessionSpec(0, 1),))])
    with pytest.raises(PlanError, match=message):
        plan_files(fold(c.events), options)
