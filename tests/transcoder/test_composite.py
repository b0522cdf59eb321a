"""The call's composite: one grid of every participant present, following joins and leaves, with
the mixed audio; it decodes cleanly and lasts as long as the call."""

from __future__ import annotations

import array
from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.transcoder.composite import WIDTH, Cell, CompositePlan, fit, grid, plan_composite
from services.transcoder.output import Sealed, build_output
from services.transcoder.plan import OutputOptions, plan_files
from services.transcoder.state import RecordingCapture, fold

from .capture_factory import Capture, ParticipantSpec, SessionSpec, make_capture
from .media_probe import probe, x264_settings
from .sealed import opened

KEY = Ed25519PrivateKey.generate()
RED = (81, 90, 240)  # Y, U, V
BLUE = (41, 240, 110)
GRAY_UV = (128, 128)


def _seal_with_composite(
    c: Capture, state: RecordingCapture, output_format: str
) -> tuple[Sealed, CompositePlan | None]:
    """Seal the files and the composite as the transcoder does: the composite is planned from
    the native (webm) files, in the destination's format."""
    options = OutputOptions(output_format)
    composite = plan_composite(plan_files(state), options)
    sealed = build_output(
        c.rec_dir,
        state,
        plan_files(state, options),
        key=c.key,
        signing_key=KEY,
        options=options,
        composite=composite,
    )
    return opened(c, sealed), composite


def _chroma(frame: av.VideoFrame, x: int, y: int) -> tuple[int, int]:
    """(U, V) at pixel (x, y) of a yuv420p picture."""
    u, v = frame.planes[1], frame.planes[2]
    cx, cy = x // 2, y // 2
    return bytes(u)[cy * u.line_size + cx], bytes(v)[cy * v.line_size + cx]


def _near(uv: tuple[int, int], color: tuple[int, int, int] | tuple[int, int]) -> bool:
    target = color[-2:]
    return abs(uv[0] - target[0]) <= 12 and abs(uv[1] - target[1]) <= 12


def _frames_at(path: Path, times: list[float]) -> dict[float, av.VideoFrame]:
    out: dict[float, av.VideoFrame] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.pts * frame.time_base)
            for want in times:
                if want not in out and t >= want:
                    out[want] = frame
    return out


@pytest.mark.parametrize("output_format", ["webm", "mp4"])
def test_grid_follows_joins_and_leaves(tmp_path: Path, output_format: str) -> None:
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec("alice", sessions=(SessionSpec(0, 6),), content=RED),
            ParticipantSpec("bob", sessions=(SessionSpec(3, 5),), content=BLUE, video="video/H264"),
        ],
    )
    sealed, composite = _seal_with_composite(c, fold(c.events), output_format)
    (entry,) = [f for f in sealed.files if f.role == "media" and not f.participant_id]
    assert entry.name == f"composite.{output_format}"
    path = sealed.output / entry.name
    p = probe(path)
    assert p.errors == []
    codecs = {"webm": {"video": "vp8", "audio": "opus"}, "mp4": {"video": "h264", "audio": "aac"}}
    assert dict(p.streams) == codecs[output_format]
    call = c.call_span_s()
    assert 7.9 < call < 8.2
    assert abs(p.duration_s - call) <= 0.02 * call, (p.duration_s, call)
    assert abs(entry.duration_s - call) <= 0.02 * call
    with av.open(str(path)) as container:
        v = container.streams.video[0].codec_context
        assert (v.width, v.height) == (640, 360)
    left, right, middle = (WIDTH // 4, 180), (3 * WIDTH // 4, 180), (WIDTH // 2, 180)
    frames = _frames_at(path, [1.5, 4.5, 7.0])
    # Alice alone fills the frame; bob joins: side by side; alice leaves: bob alone.
    assert _near(_chroma(frames[1.5], *left), RED) and _near(_chroma(frames[1.5], *right), RED)
    assert _near(_chroma(frames[4.5], *left), RED) and _near(_chroma(frames[4.5], *right), BLUE)
    assert _near(_chroma(frames[7.0], *middle), BLUE) and _near(_chroma(frames[7.0], *left), BLUE)
    manifest_entry = composite
    assert manifest_entry is not None and [m.participant_id for m in manifest_entry.members] == [
        "alice",
        "bob",
    ]


def _peak(path: Path, start: float, end: float) -> int:
    """Largest s16 sample of the audio between ``start`` and ``end`` seconds."""
    peak = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            t = float(frame.pts * frame.time_base)
            if start <= t < end:
                for mono in resampler.resample(frame):
                    samples = array.array("h", bytes(mono.planes[0])[: mono.samples * 2])
                    peak = max(peak, max(samples), -min(samples))
    return peak


def test_audio_only_participant_gets_a_gray_cell_and_is_heard(tmp_path: Path) -> None:
    c = make_capture(
        tmp_path,
        [
            ParticipantSpec("alice", sessions=(SessionSpec(0, 4),), content=RED),
            ParticipantSpec("carol", sessions=(SessionSpec(0.5, 3),), video=None),
        ],
    )
    state = fold(c.events)
    composite = plan_composite(plan_files(state), OutputOptions())
    sealed = build_output(
        c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY, composite=composite
    )
    sealed = opened(c, sealed)
    path = sealed.output / "composite.webm"
    assert probe(path).errors == []
    frame = _frames_at(path, [2.0])[2.0]
    assert _near(_chroma(frame, WIDTH // 4, 180), RED)
    assert _near(_chroma(frame, 3 * WIDTH // 4, 180), GRAY_UV)
    y = frame.planes[0]
    assert 30 <= bytes(y)[180 * y.line_size + 3 * WIDTH // 4] <= 50  # the gray, not black
    # Both voices are in the mix: the same in-phase tone, so twice as loud while both talk.
    alone, together = _peak(path, 0.1, 0.4), _peak(path, 1.0, 3.0)
    assert 5000 < alone < 7500 and 1.8 * alone < together < 2.2 * alone, (alone, together)


def test_grid_layouts() -> None:
    assert grid(1) == [Cell(0, 0, 640, 360)]
    assert grid(2) == [Cell(0, 0, 320, 360), Cell(320, 0, 320, 360)]
    assert [c.width for c in grid(5)] == [212] * 5 and len({c.y for c in grid(5)}) == 2
    # A 4:3 picture in a 16:9 cell keeps its shape, centred.
    assert fit(320, 240, Cell(0, 0, 640, 360)) == Cell(80, 0, 480, 360)


def test_participant_named_composite_keeps_its_file(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("composite", sessions=(SessionSpec(0, 1),))])
    native = plan_files(fold(c.events))
    plan = plan_composite(native, OutputOptions())
    assert plan is not None and plan.name == "_composite.webm"
    assert [p.name for p in native] == ["composite.webm"]


def test_mp4_composite_uses_x264_frame_threads(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("alice", sessions=(SessionSpec(0, 1),))])
    sealed, _ = _seal_with_composite(c, fold(c.events), "mp4")
    settings = x264_settings(sealed.output / "composite.mp4")
    assert settings["sliced_threads"] == "0" and settings["bframes"] == "0"
