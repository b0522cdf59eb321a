"""The transcoder against the ``ffmpeg`` command line (Debian's), on the same frames, same run.

- remux: a captured VP8/Opus participant to WebM. Ours reads the capture segments (encrypted, as
  the proxy writes them: decrypting is part of ours) and remuxes; ffmpeg gets the same frames
  (decrypted beforehand) as IVF + Ogg (what a raw RTP dump would be) with ``-c copy``.
- H.264: a captured H.264/Opus participant to mp4 (H.264 passed through, Opus to AAC). ffmpeg gets
  the same frames in Matroska, ``-c:v copy -c:a aac``.
- VP8 to mp4: VP8/Opus re-encoded to H.264 (x264 veryfast, CRF 23, no B-frames) and AAC; ffmpeg
  with the same settings.
- memory: peak RSS of sealing a 60 s capture against a 10 s one (flat in recording length),
  each in a child process, read from its own VmHWM (its ru_maxrss would be this process's).

Both sides do the same work: ours is ``remux()`` alone (no composite, no hashing or sealing of
the output), and the encoders get ffmpeg's settings, x264's frame threads included. Ours also
decrypts its input (the backup's segments are encrypted at rest), in ffmpeg's favour. Ours runs in
this process, warm; ffmpeg's CPU includes its process start (~0.05 s, measured with a 0.1 s input),
about 2% of the H.264 baseline and under 1% of the VP8 one, in ours' favour.

Wall time and CPU time (user+sys of all threads; ffmpeg's from RUSAGE_CHILDREN) are medians over
interleaved rounds after a warm-up. ffmpeg is installed by scripts/bench-deps/ffmpeg.sh if missing.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

if TYPE_CHECKING:
    from services.transcoder.sealing import RecordingFiles

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 180
ROUNDS = 5


def ensure_ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        subprocess.run(["bash", str(ROOT / "scripts/bench-deps/ffmpeg.sh")], check=True)
        found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError("ffmpeg is not installed and scripts/bench-deps/ffmpeg.sh failed")
    return found


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure_ours(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), _self_cpu()
    fn()
    return time.perf_counter() - w, _self_cpu() - c


def _measure_ffmpeg(argv: list[str]) -> tuple[float, float]:
    w, c = time.perf_counter(), _children_cpu()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - w, _children_cpu() - c


def _pair(
    ours: Callable[[], object], ffmpeg: list[str], rounds: int = ROUNDS
) -> dict[str, tuple[float, float]]:
    ours()
    _measure_ffmpeg(ffmpeg)
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "ffmpeg": []}
    for _ in range(rounds):
        samples["ffmpeg"].append(_measure_ffmpeg(ffmpeg))
        samples["ours"].append(_measure_ours(ours))
    return {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in samples.items()
    }


def _frames(files: RecordingFiles, stream: Any) -> list[Any]:
    from services.transcoder.plan import timed_frames
    from services.transcoder.remux import track_frames

    return list(timed_frames(stream, lambda t: track_frames(files, t)))


def _write_inputs(files: RecordingFiles, plan: Any, folder: Path) -> dict[str, Path]:
    """The participant's frames (decrypted) as IVF/Ogg (VP8) or Matroska (H.264), for ffmpeg."""
    from services.transcoder.remux import video_size

    video, audio = plan.streams
    width, height = video_size(files, video)
    vframes, aframes = _frames(files, video), _frames(files, audio)
    paths: dict[str, Path] = {}

    def mux(path: Path, fmt: str, parts: list[tuple[str, list[Any]]]) -> None:
        with av.open(str(path), "w", format=fmt) as out:
            streams = []
            for kind, _ in parts:
                if kind == "video":
                    st = out.add_mux_stream(video.info.av_name, width=width, height=height)
                else:
                    st = out.add_stream("libopus", rate=48_000, layout="stereo")
                st.time_base = Fraction(1, 1000)
                streams.append(st)
            merged = sorted(
                ((f.pts_ms, i, f) for i, (_, frames) in enumerate(parts) for f in frames),
                key=lambda x: (x[0], x[1]),
            )
            for _, i, f in merged:
                p = av.Packet(f.data)
                p.pts = p.dts = f.pts_ms
                p.duration = f.duration_ms
                p.time_base = Fraction(1, 1000)
                p.is_keyframe = f.keyframe
                p.stream = streams[i]
                out.mux(p)

    if video.codec == "video/vp8":
        paths["video"] = folder / "video.ivf"
        mux(paths["video"], "ivf", [("video", vframes)])
        paths["audio"] = folder / "audio.ogg"
        mux(paths["audio"], "ogg", [("audio", aframes)])
    else:
        paths["av"] = folder / "input.mkv"
        mux(paths["av"], "matroska", [("video", vframes), ("audio", aframes)])
    return paths


def _rows(name: str, result: dict[str, tuple[float, float]], seconds: int) -> list[dict[str, Any]]:
    (ow, oc), (fw, fc) = result["ours"], result["ffmpeg"]
    return [
        {
            "name": f"transcoder {name}, {seconds} s capture: wall s",
            "ours": f"{ow:.3f} s",
            "baseline": f"{fw:.3f} s (ffmpeg CLI)",
            "ratio": ow / fw,
            "goal": "<= 1.1x",
        },
        {
            "name": f"transcoder {name}, {seconds} s capture: CPU s",
            "ours": f"{oc:.3f} s",
            "baseline": f"{fc:.3f} s (ffmpeg CLI)",
            "ratio": oc / fc,
            "goal": "<= 1.1x",
        },
    ]


def run() -> list[dict[str, Any]]:
    from services.transcoder.plan import OutputOptions, plan_files
    from services.transcoder.remux import remux
    from services.transcoder.state import fold
    from tests.transcoder.capture_factory import ParticipantSpec, SessionSpec, make_capture
    from tests.transcoder.test_memory import peak_rss

    ffmpeg = ensure_ffmpeg()
    quiet = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-transcoder-") as tmp_name:
        tmp = Path(tmp_name)
        session = (SessionSpec(0, SECONDS),)
        vp8 = make_capture(tmp / "vp8", [ParticipantSpec("alice", sessions=session)])
        h264 = make_capture(
            tmp / "h264", [ParticipantSpec("bob", sessions=session, video="video/H264")]
        )
        (vp8_plan,) = plan_files(fold(vp8.events))
        (h264_mp4,) = plan_files(fold(h264.events), OutputOptions("mp4"))
        (h264_native,) = plan_files(fold(h264.events))
        (vp8_mp4,) = plan_files(fold(vp8.events), OutputOptions("mp4"))
        vp8_in = _write_inputs(vp8.files, vp8_plan, tmp)
        h264_in = _write_inputs(h264.files, h264_native, tmp)
        out = tmp / "out"
        out.mkdir()

        vp8_args = ["-i", str(vp8_in["video"]), "-i", str(vp8_in["audio"]), "-map", "0:v"]
        vp8_args += ["-map", "1:a"]
        aac = ["-c:a", "aac", "-b:a", "128k"]
        result = _pair(
            lambda: remux(vp8_plan, vp8.files, out / "ours.webm"),
            [*quiet, *vp8_args, "-c", "copy", str(out / "ffmpeg.webm")],
        )
        rows += _rows("remux VP8/Opus to WebM", result, SECONDS)

        result = _pair(
            lambda: remux(h264_mp4, h264.files, out / "ours.mp4"),
            [*quiet, "-i", str(h264_in["av"]), "-c:v", "copy", *aac, str(out / "ffmpeg.mp4")],
        )
        rows += _rows("H.264/Opus to mp4 (H.264 copied, AAC encoded)", result, SECONDS)

        x264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-bf", "0"]
        result = _pair(
            lambda: remux(vp8_mp4, vp8.files, out / "ours-x264.mp4"),
            [*quiet, *vp8_args, *x264, *aac, str(out / "ffmpeg-x264.mp4")],
            rounds=3,
        )
        rows += _rows("VP8/Opus to mp4 (x264 veryfast + AAC)", result, SECONDS)

        short, short_bytes = peak_rss(tmp / "mem", 10)
        long, long_bytes = peak_rss(tmp / "mem", 60)
        rows.append(
            {
                "name": "transcoder peak RSS sealing 60 s vs 10 s of capture "
                f"({long_bytes / 2**20:.0f} vs {short_bytes / 2**20:.0f} MiB read)",
                "ours": f"{long / 2**20:.1f} MiB",
                "baseline": f"{short / 2**20:.1f} MiB (10 s)",
                "ratio": long / short,
                "goal": "flat (~1.0x)",
            }
        )
    return rows
