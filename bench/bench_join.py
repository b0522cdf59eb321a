"""Frames lost from the first key frame when 16 publishers join one recording together.

Measured as ``tests/proxy/test_first_second.py`` does, with the same pieces
(``tests/proxy/join.py``): the real proxy process (embedded nats-server, a real vault on an
embedded PostgreSQL), 16 publishers in a process of their own all ``start()``ed in one gather
with pre-encoded VP8/Opus, each counting the frames it put on the wire (its first one is a key
frame); what the proxy wrote is read back from the encrypted segments. Ours is a loaded machine
(``LOAD`` busy processes competing for the CPU, the issue's case), the baseline the same run on
the idle machine; each is repeated ``RUNS`` times (median and worst reported).

``RESGUARDO_BENCH_JOIN_RUNS=3`` and ``RESGUARDO_BENCH_JOIN_LOAD=6`` change them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from shared.embedded import NatsServer

ROOT = Path(__file__).resolve().parent.parent
PUBLISHERS = 16
SECONDS = 4.0


@dataclass
class Run:
    sent: int
    written: int
    worst_track: str  # the track that lost most, if any did

    @property
    def ratio(self) -> float:
        return self.written / self.sent if self.sent else 0.0


async def one_run(
    js: JetStreamContext, nats: NatsServer, work: Path, media: Path, load: int
) -> Run:
    from shared.events import captures
    from tests.proxy.conftest import make_proxy, recording_key
    from tests.proxy.join import count_written, joined_call, shortfalls

    await asyncio.to_thread(work.mkdir)
    proxy = make_proxy(work, nats, segment_seconds="2", log_level="WARNING")
    report, events, rec = await joined_call(
        js, proxy, media, publishers=PUBLISHERS, seconds=SECONDS, load=load
    )
    assert sum(isinstance(e, captures.CaptureClosed) for e in events) == 1
    key = await recording_key(js, rec)
    rows = shortfalls(report, count_written(proxy.rec_dir(rec), events, key))
    worst = max(rows, key=lambda r: r.lost)
    return Run(
        sent=sum(r.sent for r in rows),
        written=sum(r.written for r in rows),
        worst_track=f"{worst.participant} {worst.kind} {worst.written}/{worst.sent}"
        if worst.lost
        else "",
    )


def describe(runs: list[Run]) -> str:
    ratios = sorted(r.ratio for r in runs)
    worst = min(runs, key=lambda r: r.ratio)
    out = (
        f"median {statistics.median(ratios):.3f}, worst {worst.ratio:.3f} "
        f"({worst.written}/{worst.sent} frames"
    )
    return out + (f"; worst track {worst.worst_track})" if worst.worst_track else ")")


async def run() -> list[dict[str, object]]:
    from bench.servers import encoded_media, proxy_servers

    runs_n = int(os.environ.get("RESGUARDO_BENCH_JOIN_RUNS", "3"))
    load = int(os.environ.get("RESGUARDO_BENCH_JOIN_LOAD", "6"))
    results: dict[str, list[Run]] = {"loaded": [], "idle": []}
    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        work = Path(tmp)
        media = encoded_media(work)
        async with proxy_servers(work, "bench-join") as servers:
            for i in range(runs_n):
                for mode, busy in (("loaded", load), ("idle", 0)):
                    r = await one_run(servers.js, servers.nats, work / f"{mode}-{i}", media, busy)
                    results[mode].append(r)
                    print(
                        f"  join {mode:>6} run {i + 1}: {r.written}/{r.sent} frames written "
                        f"({r.ratio:.3f}){'; worst ' + r.worst_track if r.worst_track else ''}",
                        file=sys.stderr,
                        flush=True,
                    )
    loaded, idle = results["loaded"], results["idle"]
    name = f"frames lost from first keyframe, {PUBLISHERS} publishers joining together"
    goal = "1.00x: nothing lost from the first key frame"
    return [
        {
            "name": f"{name} (median of {runs_n}, {load} busy processes on the machine)",
            "ours": describe(loaded),
            "baseline": f"idle machine: {describe(idle)}",
            "ratio": statistics.median(r.ratio for r in loaded),
            "goal": goal,
        },
        {
            "name": f"{name} (worst of {runs_n}, {load} busy processes on the machine)",
            "ours": f"{min(r.ratio for r in loaded):.3f} written/sent",
            "baseline": f"idle machine: {min(r.ratio for r in idle):.3f}",
            "ratio": min(r.ratio for r in loaded),
            "goal": goal,
        },
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for row in asyncio.run(run()):
        print(row)
