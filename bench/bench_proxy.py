"""The proxy's cost per stream: N concurrent ~1 Mbit/s VP8+Opus WHIP publishers into the real
proxy process, capture (segments, SHA-256, events) against a receive-only baseline.

- The publishers run in a separate process (``python -m bench.bench_proxy publish ...``) and
  encode nothing live: VP8 (640x360, 30 fps, ~1 Mbit/s, a key frame every 2 s) and Opus (20 ms)
  are encoded once with PyAV and looped as ``av.Packet``s (``resguardo.packet_media``), which
  aiortc only packetizes. (An aiortc VP8 encoder per publisher would cost the publisher process
  far more than the proxy.)
- The proxy is ``python -m services.proxy`` on an embedded nats-server, measured with psutil on
  its pid over a window after every publisher is connected. A real vault (``services.credentials``
  on an embedded PostgreSQL) issues each recording's key: the proxy asks it once per session and
  writes the segments encrypted.
- The baseline is the same proxy code path with ``RESGUARDO_CAPTURE_DISCARD=true`` (a
  benchmark-only setting): frames are received, reassembled and handed to the capture, which
  counts and drops them. Both modes run in the same ``make bench`` run, one after the other.
- Frames: the publisher counts what it handed aiortc; the proxy's ``/healthz`` counts frames
  received and written once every session has ended.

``run()`` returns rows for ``python -m bench proxy``; ``RESGUARDO_BENCH_PROXY_COUNTS=4,8`` and
``RESGUARDO_BENCH_PROXY_WINDOW_S=15`` change the publisher counts and the measured window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FRAMES_PER_STREAM_S = 30 + 50  # video frames + 20 ms Opus frames
WARMUP_S = 3.0
COUNTS = "4,8,16,32"  # publishers per run (RESGUARDO_BENCH_PROXY_COUNTS)
CONNECT_BATCH = 4
TAIL_S = 1.0  # media stops this long before the DELETEs, so nothing is in flight at the end


async def publish_main(config: dict[str, Any], media: dict[str, list[bytes]]) -> None:
    from resguardo.packet_media import (
        AUDIO_TICKS,
        VIDEO_TICKS,
        PacketTrack,
        packets_sent,
        send_then_pause,
    )
    from resguardo.publisher import Publisher

    track = PacketTrack
    pubs = []
    for url, token in config["targets"]:
        video = track("video", media["video"], VIDEO_TICKS, 90_000)
        audio = track("audio", media["audio"], AUDIO_TICKS, 48_000)
        pubs.append(
            Publisher(
                url,
                token,
                participant="bench",
                ca_file=Path(config["ca_file"]),
                video_track=video,
                audio_track=audio,
                connect_timeout=60,
            )
        )
    # a few at a time, as people join a call: not a storm of simultaneous DTLS handshakes
    for i in range(0, len(pubs), CONNECT_BATCH):
        await asyncio.gather(*(p.start() for p in pubs[i : i + CONNECT_BATCH]))
    print("connected", flush=True)
    await send_then_pause((t for p in pubs for t in (p.video, p.audio)), config["seconds"], TAIL_S)
    packets = await packets_sent(p.pc for p in pubs)
    results = await asyncio.gather(*(p.stop() for p in pubs))
    sent = {
        "video": sum(r.video_frames for r in results),
        "audio": sum(r.audio_frames for r in results),
        "deleted": sum(r.deleted for r in results),
        "packets": packets,
    }
    print(json.dumps(sent), flush=True)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Phase:
    mode: str  # "capture" | "receive-only"
    streams: int
    cpu_s: float
    window_s: float
    publisher_cpu_s: float
    sent: int
    sent_by_kind: dict[str, int]
    received: int
    written: int
    window_frames: int  # frames the proxy received during the window
    load: float  # the machine's 1-minute load average at the end of the window

    @property
    def stream_seconds(self) -> float:
        """Media the proxy took in during the window, in stream-seconds (80 frames each): less
        than streams x window when it falls behind (CPU-starved), so cost is per media taken."""
        return self.window_frames / FRAMES_PER_STREAM_S

    @property
    def keeping_up(self) -> float:
        return self.stream_seconds / (self.streams * self.window_s)

    @property
    def core_per_stream(self) -> float:
        return self.cpu_s / self.stream_seconds if self.window_frames else float("inf")


async def start_recording(js: Any) -> tuple[str, str]:
    from shared import natsio
    from shared.events import event_id, now, recordings
    from shared.ids import new_recording_id, new_tenant_id

    rid, token = new_recording_id(), secrets.token_urlsafe(32)
    await natsio.publish(
        js,
        recordings.RecordingStarted(
            event_id=event_id(rid, "started"),
            recording_id=rid,
            tenant_id=new_tenant_id(),
            occurred_at=now(),
            destination_id="dst_0123456789abcdef",
            destination_name="bench",
            whip_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
        ),
    )
    return rid, token


async def health(base_url: str, ca_file: Path) -> dict[str, Any]:
    import aiohttp

    from shared.tls import client_context

    connector = aiohttp.TCPConnector(ssl=client_context(ca_file))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{base_url}/healthz") as resp:
            return dict(await resp.json())


async def run_phase(
    js: Any,
    nats_url: str,
    work: Path,
    media: Path,
    mode: str,
    streams: int,
    window_s: float,
    store_env: dict[str, str] | None = None,
) -> Phase:
    import psutil

    from shared.embedded import free_port, python_env, wait_for_port
    from shared.procs import die_with_parent

    port = free_port()
    data_dir = work / f"{mode}-{streams}"
    env = {
        **python_env(),
        "PYTHONPATH": str(ROOT),
        "RESGUARDO_NATS_URL": nats_url,
        "RESGUARDO_DATA_DIR": str(data_dir),
        "RESGUARDO_WHIP_PORT": str(port),
        "RESGUARDO_LOG_LEVEL": os.environ.get("RESGUARDO_BENCH_PROXY_LOG_LEVEL", "WARNING"),
        "RESGUARDO_MAX_PUBLISHERS": str(streams + 10),
        "RESGUARDO_CAPTURE_DISCARD": "true" if mode == "receive-only" else "false",
        **(store_env if mode == "capture-store" and store_env else {}),
    }
    data_dir.mkdir(parents=True)
    log = (work / f"proxy-{mode}-{streams}.log").open("wb")
    proxy = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.proxy",
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        preexec_fn=die_with_parent(),  # a killed bench leaves no proxy behind
    )
    publisher: asyncio.subprocess.Process | None = None
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 30.0)
        base_url = f"https://127.0.0.1:{port}"
        ca_file = data_dir / "tls" / "cert.pem"
        targets = []
        for _ in range(streams):
            rid, token = await start_recording(js)
            targets.append((f"{base_url}/whip/{rid}", token))
        config = {
            "media": str(media),
            "ca_file": str(ca_file),
            "targets": targets,
            "seconds": WARMUP_S + window_s + 1.0,
        }
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_proxy",
            "publish",
            json.dumps(config),
            cwd=ROOT,
            env={**python_env(), "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent(),
        )
        assert publisher.stdout is not None
        line = await asyncio.wait_for(publisher.stdout.readline(), 120)
        if line.strip() != b"connected":
            raise RuntimeError(f"the publishers did not connect (got {line!r}); see the logs")
        await asyncio.sleep(WARMUP_S)
        proc, pub_proc = psutil.Process(proxy.pid), psutil.Process(publisher.pid)
        h0 = await health(base_url, ca_file)
        c0, p0, t0 = proc.cpu_times(), pub_proc.cpu_times(), time.monotonic()
        await asyncio.sleep(window_s)
        c1, p1, t1 = proc.cpu_times(), pub_proc.cpu_times(), time.monotonic()
        h1 = await health(base_url, ca_file)
        load = os.getloadavg()[0]
        out = await asyncio.wait_for(publisher.stdout.readline(), 120)
        sent = json.loads(out)
        await asyncio.wait_for(publisher.wait(), 60)
        for _ in range(150):  # every session ended (its frames counted): at most 30 s
            h = await health(base_url, ca_file)
            if not h["sessions"]:
                break
            await asyncio.sleep(0.2)
        return Phase(
            mode=mode,
            streams=streams,
            cpu_s=(c1.user + c1.system) - (c0.user + c0.system),
            window_s=t1 - t0,
            publisher_cpu_s=(p1.user + p1.system) - (p0.user + p0.system),
            sent=sent["video"] + sent["audio"],
            sent_by_kind={
                "video": sent["video"],
                "audio": sent["audio"],
                **{f"{k}_packets": v for k, v in sent["packets"].items()},
            },
            received=int(h["frames_received"]),
            written=int(h["frames_written"]),
            window_frames=int(h1["frames_received"]) - int(h0["frames_received"]),
            load=load,
        )
    finally:
        if publisher is not None and publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
        if proxy.returncode is None:
            proxy.terminate()
            try:
                await asyncio.wait_for(proxy.wait(), 30)
            except TimeoutError:
                proxy.kill()
                await proxy.wait()
        log.close()


def rows_for(capture: Phase, baseline: Phase) -> list[dict[str, object]]:
    n = capture.streams
    cap, base = capture.core_per_stream, baseline.core_per_stream

    def behind(p: Phase) -> str:
        return f"; took in only {p.keeping_up:.0%} of the media" if p.keeping_up < 0.98 else ""

    return [
        {
            "name": f"proxy CPU per stream, {n} VP8+Opus publishers",
            "ours": f"{cap * 100:.2f}% of a core ({1 / cap:.0f} streams/core){behind(capture)}",
            "baseline": f"{base * 100:.2f}% receive-only ({1 / base:.0f} streams/core)"
            + behind(baseline),
            "ratio": cap / base,
            "goal": "<= 1.3x, >= 40 streams/core",
        },
        {
            "name": f"frames written / sent, {n} publishers",
            "ours": f"{capture.written}/{capture.sent} (lost {capture.sent - capture.written})",
            "baseline": f"{baseline.received}/{baseline.sent} received (receive-only)",
            "ratio": capture.written / capture.sent if capture.sent else 0.0,
            "goal": "1.00x: no frame lost",
        },
    ]


def store_row(store: Phase, local: Phase) -> dict[str, object]:
    n = store.streams
    return {
        "name": f"proxy CPU per stream, backup in SeaweedFS (S3) vs local folder, {n} publishers",
        "ours": f"{store.core_per_stream * 100:.2f}% of a core, "
        f"{store.written}/{store.sent} frames written",
        "baseline": f"{local.core_per_stream * 100:.2f}% (segments in the local folder)",
        "ratio": store.core_per_stream / local.core_per_stream,
        "goal": "<= 1.1x",
    }


def start_vault(work: Path, nats_url: str, database_url: str) -> Any:
    """The vault, which the proxy asks for each recording's key (the tests' launcher: its own
    process group, stopped by pid); returns once it is ready."""
    sys.path.insert(0, str(ROOT))
    from tests.credentials.helpers import start_ready_vault

    return start_ready_vault(work, nats_url, database_url)


def seaweed_env(work: Path) -> tuple[Any, dict[str, str]]:
    """A real SeaweedFS (the tests' helper) and the proxy settings that put the backup in it."""
    sys.path.insert(0, str(ROOT))
    from tests.seaweed import SeaweedServer

    server = SeaweedServer(work / "weed")
    weed = server.start()
    bucket = weed.new_bucket("bench-backup")
    secret = work / "weed-secret"
    secret.write_text(weed.secret_access_key)
    secret.chmod(0o600)
    return server, {
        "RESGUARDO_BACKUP_URL": f"s3://{bucket}",
        "RESGUARDO_BACKUP_S3_ENDPOINT": weed.endpoint,
        "RESGUARDO_BACKUP_S3_ACCESS_KEY_ID": weed.access_key_id,
        "RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE": str(secret),
    }


async def run() -> list[dict[str, object]]:
    from bench.servers import encoded_media, proxy_servers

    counts = [int(c) for c in os.environ.get("RESGUARDO_BENCH_PROXY_COUNTS", COUNTS).split(",")]
    window_s = float(os.environ.get("RESGUARDO_BENCH_PROXY_WINDOW_S", "15"))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        work = Path(tmp)
        media = encoded_media(work)
        async with proxy_servers(work, "bench-proxy") as servers:
            weed, store_env = seaweed_env(work)
            servers.stack.callback(weed.stop)
            js, server = servers.js, servers.nats
            for n in counts:
                phases = {}
                for mode in ("receive-only", "capture", "capture-store"):
                    phase = await run_phase(
                        js, server.url, work, media, mode, n, window_s, store_env
                    )
                    phases[mode] = phase
                    print(
                        f"  {n:>3} streams {mode:>12}: proxy {phase.cpu_s:.2f} CPU s in "
                        f"{phase.window_s:.1f} s, took in {phase.keeping_up:.0%} of the media "
                        f"sent ({phase.core_per_stream * 100:.2f}% of a core per stream), "
                        f"publishers {phase.publisher_cpu_s:.2f} CPU s; frames sent "
                        f"{phase.sent}, received {phase.received}, written {phase.written}; "
                        f"load average {phase.load:.1f}",
                        file=sys.stderr,
                        flush=True,
                    )
                rows.extend(rows_for(phases["capture"], phases["receive-only"]))
                rows.append(store_row(phases["capture-store"], phases["capture"]))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "publish":
        cfg = json.loads(sys.argv[2])
        from resguardo.packet_media import load_media

        asyncio.run(publish_main(cfg, load_media(Path(cfg["media"]))))
    else:
        raise SystemExit("usage: python -m bench proxy")
