"""Lip sync on what comes out: aiortc publishers that flash the picture and beep at the same
instants (``resguardo.flashbeep``) into the real proxy, then the real transcoder; the offset
between each flash and its beep is measured on the decoded per-participant files.

- 8 publishers at once while another process keeps one core busy: every flash within 40 ms of
  its beep, and every flash the publishers showed is in the files.
- A sender whose microphone starts 300 ms after its camera and whose camera clock runs 100 ppm
  fast, beside one whose camera clock runs 1500 ppm fast (over 26 s that is 37 ms: the drift a
  100 ppm clock has after 6 minutes). Both within 40 ms, and the fast one's offset must not grow
  from the first flash to the last; the manifest says both were placed by their sender reports
  and shows the drift measured from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from shared.embedded import NatsServer

from .conftest import Proxy, recording_key
from .lipsync import Sender, flash_call, offsets_in
from .transcode import media_files, sealed_file, transcode

BUDGET_S = 0.040  # what viewers cannot detect (ITU-R BT.1359: +45 ms audio early, -125 ms late)


@dataclass
class Measured:
    offsets: dict[str, list[float]]  # participant -> beep minus flash, seconds, per flash
    shown: dict[str, int]  # flashes each publisher's camera showed
    tracks: dict[str, list[dict[str, Any]]]  # participant -> the manifest's track entries


async def record(
    js: JetStreamContext,
    nats_server: NatsServer,
    proxy: Proxy,
    work: Path,
    senders: list[Sender],
    seconds: float,
    *,
    busy: bool = False,
) -> Measured:
    call = await flash_call(js, proxy, senders, seconds, busy=busy)
    rec = call.rec
    key = await recording_key(js, rec)
    sealed = await transcode(js, nats_server, proxy.backup_root, work, rec.rid)
    files = media_files(proxy.backup_root, sealed, key, work / "plain")
    manifest = json.loads(
        sealed_file(proxy.backup_root, sealed, key, work / "plain", "manifest.json").read_text()
    )
    offsets = {pid: offsets_in(path) for pid, path in files.items()}
    print("beep minus flash (ms):", {p: [round(o * 1000) for o in v] for p, v in offsets.items()})
    return Measured(
        offsets=offsets,
        shown=call.flashes_shown,
        tracks={f["participant_id"]: f["tracks"] for f in manifest["files"]},
    )


async def test_eight_publishers_and_a_busy_core_stay_in_sync(
    js: JetStreamContext, nats_server: NatsServer, proxy: Proxy, tmp_path: Path
) -> None:
    senders = [Sender(f"p{i}", audio_delay_s=0.05 * (i % 4)) for i in range(8)]
    m = await record(js, nats_server, proxy, tmp_path, senders, seconds=9.5, busy=True)
    assert set(m.offsets) == {s.participant for s in senders}
    for pid, offsets in m.offsets.items():
        assert len(offsets) == m.shown[pid] >= 4, (pid, offsets, m.shown[pid])
        assert {t["alignment"] for t in m.tracks[pid]} == {"sender_report"}, m.tracks[pid]
    worst = max(abs(o) for v in m.offsets.values() for o in v)
    assert worst <= BUDGET_S, m.offsets


async def test_late_microphone_and_fast_camera_clocks(
    js: JetStreamContext, nats_server: NatsServer, proxy: Proxy, tmp_path: Path
) -> None:
    senders = [
        Sender("late-mic", audio_delay_s=0.3, video_clock_ppm=100.0),
        Sender("fast-cam", audio_delay_s=0.3, video_clock_ppm=1500.0),
    ]
    m = await record(js, nats_server, proxy, tmp_path, senders, seconds=26.5)
    for pid, offsets in m.offsets.items():
        assert len(offsets) == m.shown[pid] >= 12, (pid, offsets, m.shown[pid])
        assert max(abs(o) for o in offsets) <= BUDGET_S, (pid, offsets)
        assert {t["alignment"] for t in m.tracks[pid]} == {"sender_report"}, m.tracks[pid]
    fast = m.offsets["fast-cam"]
    # Uncorrected, the camera's 1500 ppm would move its flashes 36 ms later between the first
    # flash (2 s) and the last (26 s).
    assert abs(fast[-1] - fast[0]) <= 0.010, fast
    (video,) = [t for t in m.tracks["fast-cam"] if t["kind"] == "video"]
    assert 1200 <= video["clock_drift_ppm"] <= 1800, video
