"""``python -m bench capacity``: a capacity model from figures measured in this run.

1. A real two-party recording (``resguardo up`` in a temp dir, a ``file`` destination, two
   synthetic WebRTC publishers for ``SECONDS``, stop, wait until uploaded): messages and stored
   bytes it added to each JetStream stream (stream info before and after; the system is fresh,
   so they are the recording's own), split into per-minute events (``capture.segment_written``:
   they grow with the call) and per-recording ones; and CPU seconds of each service (from
   ``/proc``, less what the service burns idle, measured over the same span before the call).
2. JetStream's publish rate, ``IN_FLIGHT`` at once, with ``sync_interval: always``: one node, and
   an R3 stream on a 3-node cluster (``shared.natscluster``; all three nodes on this machine);
   medians of ``RATE_ROUNDS`` alternating rounds.
3. The proxy's CPU per stream from its own bench (``bench/results/latest.json``) when that ran
   last, else this recording's.

The model (see docs/capacity.md) sizes each kind of machine (``CORES`` cores at ``UTILIZATION``)
for 1,000, 10,000 and 100,000 concurrent two-party calls of ``CALL_MINUTES`` on average.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECONDS = 20.0  # the measured call
CALL_MINUTES = 10.0  # assumed mean call length (per-recording events and grants)
CORES, UTILIZATION = 8, 0.6  # the machine each service is sized in, and its planned load
TARGETS = (1_000, 10_000, 100_000)
IN_FLIGHT, PUBLISHES, RATE_ROUNDS = 256, 4000, 3
SERVICES = ("proxy", "transcoder", "uploader", "credentials", "api")
PER_MINUTE_KINDS = ("segment_written",)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prior_proxy() -> float | None:
    """Proxy CPU per stream (share of a core) from the last proxy bench, if there is one."""
    path = Path(__file__).parent / "results" / "latest.json"
    try:
        rows = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return None
    for row in rows:
        if str(row["name"]).startswith("proxy CPU per stream, 16"):
            return float(str(row["ours"]).split("%")[0]) / 100
    return None


async def _streams(url: str) -> dict[str, tuple[int, int]]:
    import nats

    from shared.events import STREAMS

    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        out = {}
        for spec in STREAMS:
            state = (await js.stream_info(spec.name)).state
            out[spec.name] = (state.messages, state.bytes)
        return out
    finally:
        await nc.close()


async def _kinds(url: str, rid: str) -> dict[str, int]:
    """Messages per event kind (``<stream>.<kind>``) stored for recording ``rid``."""
    import nats

    from shared.events import STREAMS

    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        out: dict[str, int] = {}
        for spec in STREAMS:
            info = await js.stream_info(spec.name, subjects_filter=f"{spec.prefix}.{rid}.>")
            for subject, n in (info.state.subjects or {}).items():
                key = f"{spec.name}.{subject.split('.')[2]}"
                out[key] = out.get(key, 0) + n
        return out
    finally:
        await nc.close()


def _measure_recording(tmp: Path) -> dict[str, Any]:
    from resguardo.publisher import publish
    from tests.e2e.system import start_system, stop_system

    tmp.mkdir(parents=True)
    system = start_system(tmp)
    try:
        out_dir = tmp / "delivered"
        out_dir.mkdir()
        config = tmp / "dest.json"
        config.write_text(json.dumps({"path": str(out_dir)}))
        system.cli("destinations", "add", "cap", "--provider", "file", "--config", str(config))
        url = system.endpoints["nats_url"]
        pids = {s: system.pid(s) for s in SERVICES}
        cpu0, t0 = {s: _cpu(p) for s, p in pids.items()}, time.monotonic()
        time.sleep(SECONDS / 2)  # idle: what each service costs with no call at all
        cpu1, t1 = {s: _cpu(p) for s, p in pids.items()}, time.monotonic()
        idle = {s: (cpu1[s] - cpu0[s]) / (t1 - t0) for s in SERVICES}
        before = asyncio.run(_streams(url))
        rec = system.cli_json("recordings", "start", "--destination", "cap")
        rid, ca = rec["recording_id"], Path(system.endpoints["ca_file"])

        async def call() -> None:
            await asyncio.gather(
                *(
                    publish(
                        rec["whip_url"], rec["token"], participant=p, seconds=SECONDS, ca_file=ca
                    )
                    for p in ("alice", "bob")
                )
            )

        t2 = time.monotonic()
        asyncio.run(call())
        system.cli("recordings", "stop", rid)
        final = system.wait_state(rid, {"uploaded", "retained", "failed"}, timeout=150)
        if final["state"] != "uploaded":
            raise RuntimeError(f"the measured recording ended {final['state']}")
        t3 = time.monotonic()
        cpu3 = {s: _cpu(p) for s, p in pids.items()}
        work = {s: max(0.0, cpu3[s] - cpu1[s] - idle[s] * (t3 - t2)) for s in SERVICES}
        after = asyncio.run(_streams(url))
        kinds = asyncio.run(_kinds(url, rid))
        delivered = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    finally:
        stop_system(system)
    delta = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}
    return {"cpu": work, "streams": delta, "kinds": kinds, "delivered": delivered}


async def _publish_rate(urls: list[str], replicas: int, name: str) -> float:
    """Publishes per second to a fresh stream of ``replicas``, ``IN_FLIGHT`` at once."""
    import nats
    from nats.js import api

    nc = await nats.connect(urls)
    try:
        js = nc.jetstream()
        for _ in range(50):  # a cluster may still be electing its meta leader
            try:
                await js.add_stream(
                    api.StreamConfig(
                        name=name,
                        subjects=[f"{name.lower()}.>"],
                        storage=api.StorageType.FILE,
                        num_replicas=replicas,
                    )
                )
                break
            except Exception:
                await asyncio.sleep(0.2)
        payload = b"x" * 500  # a segment_written event is about this size
        it = iter(range(PUBLISHES))

        async def worker() -> None:
            for i in it:
                await js.publish(f"{name.lower()}.rec{i % 64}.seg", payload, timeout=10)

        await asyncio.gather(*(worker() for _ in range(8)))  # warm
        it = iter(range(PUBLISHES))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return PUBLISHES / (time.perf_counter() - t0)
    finally:
        await nc.close()


def _jetstream(tmp: Path) -> dict[str, float]:
    """Medians of ``RATE_ROUNDS`` alternating rounds on one node and on the R3 cluster, both up
    at once, so neither gets a quieter machine."""
    from shared.embedded import NatsServer
    from shared.natscluster import NatsCluster

    server = NatsServer(tmp / "single").start()
    cluster: NatsCluster | None = None
    try:
        cluster = NatsCluster(tmp / "cluster", 3).start()
        single, r3 = [], []
        for r in range(RATE_ROUNDS):
            single.append(asyncio.run(_publish_rate([server.url], 1, f"S{r}")))
            r3.append(asyncio.run(_publish_rate(cluster.urls, 3, f"R{r}")))
    finally:
        server.stop()
        if cluster is not None:
            cluster.stop()
    return {"single": statistics.median(single), "r3": statistics.median(r3)}


def _model(
    rec: dict[str, Any], rates: dict[str, float], prior_proxy: float | None
) -> tuple[str, list[dict[str, object]]]:
    minutes = SECONDS / 60
    streams: dict[str, tuple[int, int]] = rec["streams"]
    per_msg = {name: b / m for name, (m, b) in streams.items() if m}
    grows = {k: n for k, n in rec["kinds"].items() if k.split(".")[1] in PER_MINUTE_KINDS}
    fixed = {k: n for k, n in rec["kinds"].items() if k not in grows}
    ev_min = sum(grows.values()) / minutes  # per call-minute
    ev_fixed = sum(fixed.values())  # per call
    b_min = sum(n * per_msg[k.split(".")[0]] for k, n in grows.items()) / minutes
    b_fixed = sum(n * per_msg[k.split(".")[0]] for k, n in fixed.items())
    call_s = CALL_MINUTES * 60
    ev_s = ev_min / 60 + ev_fixed / call_s  # events per second of one ongoing call
    b_s = b_min / 60 + b_fixed / call_s
    cpu = rec["cpu"]
    proxy_stream = prior_proxy if prior_proxy is not None else cpu["proxy"] / (2 * SECONDS)
    # Core-seconds per second of one ongoing call, per service: the proxy while it lasts; the
    # others per call-minute produced (transcode, upload, read model) or per call (the grant).
    per_call = {
        "proxy": 2 * proxy_stream,
        "transcoder": cpu["transcoder"] / SECONDS,
        "uploader": cpu["uploader"] / SECONDS,
        "api": cpu["api"] / SECONDS,
        "credentials": cpu["credentials"] / call_s,
    }
    budget = CORES * UTILIZATION
    js_budget = rates["r3"] * UTILIZATION
    lines = [
        f"Measured: one {SECONDS:.0f} s two-party call; per call-minute {ev_min:.1f} events "
        f"({b_min / 1024:.1f} KiB stored), per call {ev_fixed} more ({b_fixed / 1024:.1f} KiB); "
        f"delivered media {rec['delivered'] / minutes / 2**20:.1f} MiB per call-minute.",
        "Events per call by kind: "
        + ", ".join(f"{k} {n}" for k, n in sorted(rec["kinds"].items())),
        f"JetStream, sync_interval always, {IN_FLIGHT} in flight: {rates['single']:,.0f}/s one "
        f"node, {rates['r3']:,.0f}/s R3 (3 nodes on this machine).",
        "Cores per ongoing call: "
        + ", ".join(f"{k} {v * 1000:.2f} m" for k, v in per_call.items())
        + (" (proxy from its bench)" if prior_proxy is not None else " (proxy from this call)"),
        f"Calls per {CORES}-core machine at {UTILIZATION:.0%}: "
        + ", ".join(f"{k} {budget / v:,.0f}" for k, v in per_call.items() if v > 0)
        + f"; per R3 JetStream cluster at {UTILIZATION:.0%}: {js_budget / ev_s:,.0f}",
        "",
        "| Concurrent calls | " + " | ".join(SERVICES) + " | JetStream R3 clusters | events/s |",
        "|---" * (len(SERVICES) + 3) + "|",
    ]
    rows: list[dict[str, object]] = [
        {
            "name": "capacity: JetStream events per call-minute (two parties), stored",
            "ours": f"{ev_min:.1f} + {ev_fixed} per call ({b_min / 1024:.1f} KiB/min)",
            "baseline": f"{ev_s * 1000:.1f} events/s per 1,000 calls of {CALL_MINUTES:.0f} min",
            "ratio": ev_min / 60 / ev_s,
            "goal": "(measured: share of events that grow with time)",
        },
        {
            "name": f"capacity: JetStream R3 publish rate, {IN_FLIGHT} in flight, fsync always",
            "ours": f"{rates['r3']:,.0f}/s (R3, 3 nodes on one machine)",
            "baseline": f"{rates['single']:,.0f}/s (one node)",
            "ratio": rates["r3"] / rates["single"],
            "goal": "(reference)",
        },
    ]
    for calls in TARGETS:
        need = {k: max(1, math.ceil(calls * v / budget)) for k, v in per_call.items()}
        clusters = max(1, math.ceil(calls * ev_s / js_budget))
        lines.append(
            f"| {calls:,} | "
            + " | ".join(str(need[s]) for s in SERVICES)
            + f" | {clusters} | {calls * ev_s:,.0f} |"
        )
        rows.append(
            {
                "name": f"capacity: {calls:,} concurrent two-party calls ({CORES}-core machines)",
                "ours": ", ".join(f"{s} {need[s]}" for s in SERVICES) + f", {clusters} R3",
                "baseline": f"{calls * ev_s:,.0f} events/s, {calls * b_s / 2**20:.1f} MiB/s "
                f"stored (x3 replicas); one R3 cluster: {rates['r3']:,.0f}/s",
                "ratio": calls * ev_s / rates["r3"],
                "goal": f"<= {UTILIZATION}x per cluster, else shard",
            }
        )
    first = min(per_call, key=lambda k: budget / per_call[k] if per_call[k] else math.inf)
    lines.append(
        f"\nFirst limit on one machine of each kind: {first} ({budget / per_call[first]:,.0f} "
        f"calls); the first shared limit: one R3 JetStream cluster at {js_budget / ev_s:,.0f} "
        "calls (services add machines; a stream has one leader: shard past it)."
    )
    return "\n".join(lines), rows


def run() -> list[dict[str, object]]:
    prior = _prior_proxy()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print("  capacity: JetStream publish rates...", file=sys.stderr, flush=True)
        rates = _jetstream(tmp / "js")
        print(f"  capacity: {rates}", file=sys.stderr, flush=True)
        print("  capacity: one recorded two-party call...", file=sys.stderr, flush=True)
        rec = _measure_recording(tmp / "rec")
    text, rows = _model(rec, rates, prior)
    print(text)
    return rows
