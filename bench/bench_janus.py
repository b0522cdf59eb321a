"""Our proxy against Janus 1.1.2 (Debian's ``janus``), both recording N ~1 Mbit/s VP8+Opus
publishers in the same run: CPU per recorded stream and frames lost, ours / Janus.

- Publishers: ``resguardo.packet_media`` (pre-encoded VP8 640x360 30 fps + Opus 20 ms, looped
  by aiortc; the same media and codec preferences for both sides) in a separate process
  (``python -m bench.bench_janus publish ...``) whose CPU is not counted.
- Ours: bench_proxy's ``run_phase(..., "capture", ...)`` (embedded nats-server, a real vault on
  an embedded PostgreSQL). Per frame the proxy reassembles RTP into frames, hashes (SHA-256)
  and encrypts (AES) them into segment files (fsync'd on close), and publishes a JetStream
  event per segment (nats-server fsyncs every write). Only the proxy's pid is measured.
- Janus: ``janus -F <tmp> -C <tmp>/janus.jcfg``, only the HTTP transport (127.0.0.1, a free
  port, no admin API) and the VideoRoom plugin (folders of symlinks holding only those two),
  ``recordings_tmp_ext = "tmp"`` (a recording is renamed to .mjr once closed), log to a file,
  debug level 4, all else default. Signalling: Janus's HTTP REST API from the publisher
  process, one session (keepalives, events by long poll); per publisher a videoroom handle, a
  room of its own (``record: true``, ``rec_dir``, ``publishers: 1``, opus/vp8), ``join`` as
  publisher, ``publish`` with aiortc's offer (all candidates gathered: no trickle) and its
  answer; at the end ``unpublish`` (closes the recorders), ``destroy`` rooms and session. Per
  packet Janus decrypts SRTP and fwrite()s the RTP packet to the track's .mjr (buffered stdio,
  no fsync, no hash, no encryption, no reassembly, no events).
- CPU per stream, the same for both (bench_proxy's ``Phase.core_per_stream``): CPU seconds of
  the server's pid (psutil, all threads) over a window opening WARMUP_S after every publisher
  is connected, over the stream-seconds of media taken in during the window (frames / 80).
  Ours counts frames received (``/healthz``); Janus's are the frames in the .mjr files whose
  first packet was written in the window (the header's real time ``u`` + each record's ms).
- Frames lost: frames handed to aiortc (``PacketTrack.frames``) against frames written
  (``/healthz``) for ours, complete frames in the .mjr files for Janus (bench/janus.py: a video
  frame is an RTP timestamp with consecutive sequence numbers, start bit and marker; an audio
  frame one RTP packet).
- A third phase per run is our proxy receiving only (``RESGUARDO_CAPTURE_DISCARD``: aiortc's
  SRTP, RTP and jitter buffer, frames dropped), for reference: what the capture adds is the rest.
- The sides run one after the other (rotating which goes first), each with a fresh server
  and publisher process; figures are medians of the runs. The proxy asks for 4 MiB UDP receive
  buffers; Janus (libnice) keeps the system default.

Settings: RESGUARDO_BENCH_JANUS_STREAMS (16), RESGUARDO_BENCH_JANUS_WINDOW_S (15),
RESGUARDO_BENCH_JANUS_REPEATS (3). Janus missing: run ``scripts/bench-deps.sh``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

from bench.bench_proxy import CONNECT_BATCH, TAIL_S, WARMUP_S, Phase, run_phase
from bench.janus import JanusApi, JanusServer, count_frames, janus_binary, janus_lib

ROOT = Path(__file__).resolve().parent.parent
ROOM = {"publishers": 1, "record": True, "audiocodec": "opus", "videocodec": "vp8"}


async def janus_publisher(api: JanusApi, index: int, rec_dir: str, video: Any, audio: Any) -> Any:
    """One publisher in a room of its own, recorded; returns (handle, room, peer connection)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from resguardo.publisher import _prefer  # the WHIP publisher's codec choice, for parity

    handle = await api.attach()
    room = 1000 + index
    await api.message(handle, {"request": "create", "room": room, "rec_dir": rec_dir, **ROOM})
    await api.call(handle, {"request": "join", "ptype": "publisher", "room": room})
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    _prefer(pc.addTransceiver(video, direction="sendonly"), "video", "video/VP8")
    _prefer(pc.addTransceiver(audio, direction="sendonly"), "audio", "audio/opus")
    await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
    offer = {"type": "offer", "sdp": pc.localDescription.sdp}
    event = await api.call(handle, {"request": "publish"}, jsep=offer)
    await pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
    await asyncio.wait_for(connected.wait(), 60)
    return handle, room, pc


async def publish_main(config: dict[str, Any], media: dict[str, list[bytes]]) -> None:
    import aiohttp

    from resguardo.packet_media import (
        AUDIO_TICKS,
        VIDEO_TICKS,
        PacketTrack,
        packets_sent,
        send_then_pause,
    )

    streams = range(config["streams"])
    async with aiohttp.ClientSession() as http:
        api = JanusApi(http, config["url"])
        await api.open()
        video = [PacketTrack("video", media["video"], VIDEO_TICKS, 90_000) for _ in streams]
        audio = [PacketTrack("audio", media["audio"], AUDIO_TICKS, 48_000) for _ in streams]
        tracks = list(zip(video, audio, strict=True))
        pubs: list[Any] = []
        for i in range(0, len(tracks), CONNECT_BATCH):  # a few at a time, as in bench_proxy
            batch = tracks[i : i + CONNECT_BATCH]
            pubs += await asyncio.gather(
                *(janus_publisher(api, i + j, config["rec_dir"], *t) for j, t in enumerate(batch))
            )
        print("connected", flush=True)
        await send_then_pause(video + audio, config["seconds"], TAIL_S)
        packets = await packets_sent(pc for _, _, pc in pubs)
        for handle, _, _ in pubs:  # unpublishing closes the recorders
            await api.call(handle, {"request": "unpublish"})
        for handle, room, pc in pubs:
            await pc.close()
            await api.message(handle, {"request": "destroy", "room": room})
        await api.close()
    sent = {"video": sum(v.frames for v in video), "audio": sum(a.frames for a in audio)}
    print(json.dumps({**sent, "packets": packets}), flush=True)


# -- the run ---------------------------------------------------------------------------------


async def run_janus_phase(work: Path, media: Path, streams: int, window_s: float) -> Phase:
    import psutil

    from shared.embedded import python_env
    from shared.procs import die_with_parent

    janus = JanusServer(work)
    publisher: asyncio.subprocess.Process | None = None
    try:
        janus.spawn()  # from this (the main) thread: janus dies with it
        await asyncio.to_thread(janus.wait_ready)
        assert janus.proc is not None
        config = {
            "url": janus.url,
            "rec_dir": str(janus.rec_dir),
            "media": str(media),
            "streams": streams,
            "seconds": WARMUP_S + window_s + 1.0,
        }
        argv = [sys.executable, "-m", "bench.bench_janus", "publish", json.dumps(config)]
        env = {**python_env(), "PYTHONPATH": str(ROOT)}
        publisher = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env, stdout=PIPE, preexec_fn=die_with_parent()
        )
        assert publisher.stdout is not None
        line = await asyncio.wait_for(publisher.stdout.readline(), 120)
        if line.strip() != b"connected":
            raise RuntimeError(f"the publishers did not connect to janus (got {line!r})")
        await asyncio.sleep(WARMUP_S)
        proc, pub_proc = psutil.Process(janus.proc.pid), psutil.Process(publisher.pid)
        c0, p0, t0, w0 = proc.cpu_times(), pub_proc.cpu_times(), time.monotonic(), time.time()
        await asyncio.sleep(window_s)
        c1, p1, t1, w1 = proc.cpu_times(), pub_proc.cpu_times(), time.monotonic(), time.time()
        load = os.getloadavg()[0]
        out = await asyncio.wait_for(publisher.stdout.readline(), 120)
        if not out.strip():
            raise RuntimeError("the janus publishers failed; see the output above")
        sent = json.loads(out)
        await asyncio.wait_for(publisher.wait(), 60)
        for _ in range(150):  # every recorder closed (renamed from .mjr.tmp): at most 30 s
            if not list(janus.rec_dir.glob("*.mjr.tmp")):
                break
            await asyncio.sleep(0.2)
        files = sorted(janus.rec_dir.glob("*.mjr"))
        recorded, written, window_frames = count_frames(files, since=w0, until=w1)
        if len(files) != 2 * streams:
            print(f"  janus: {len(files)} .mjr files for {streams} streams", file=sys.stderr)
        return Phase(
            mode="janus",
            streams=streams,
            cpu_s=(c1.user + c1.system) - (c0.user + c0.system),
            window_s=t1 - t0,
            publisher_cpu_s=(p1.user + p1.system) - (p0.user + p0.system),
            sent=sent["video"] + sent["audio"],
            sent_by_kind={"video": sent["video"], "audio": sent["audio"]}
            | {f"{k}_packets": v for k, v in sent["packets"].items()},
            received=recorded,
            written=written,
            window_frames=window_frames,
            load=load,
        )
    finally:
        if publisher is not None and publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
        janus.stop()


def nominal(p: Phase) -> float:
    """CPU per stream over streams x window (whatever media was taken in): for reference."""
    return p.cpu_s / (p.streams * p.window_s)


def describe(p: Phase) -> str:
    return (
        f"{p.mode:>7}: {p.cpu_s:.2f} CPU s in {p.window_s:.1f} s, took in {p.keeping_up:.0%} "
        f"of the media ({p.core_per_stream * 100:.2f}% of a core per stream; "
        f"{nominal(p) * 100:.2f}% per nominal stream), publishers "
        f"{p.publisher_cpu_s:.2f} CPU s; frames sent {p.sent}, received {p.received}, "
        f"written {p.written}; load {p.load:.1f}"
    )


def rows_for(runs: list[tuple[Phase, Phase]], receive_only: list[Phase]) -> list[dict[str, object]]:
    n = runs[0][0].streams
    ours = statistics.median(o.core_per_stream for o, _ in runs)
    janus = statistics.median(j.core_per_stream for _, j in runs)
    ratio = statistics.median(o.core_per_stream / j.core_per_stream for o, j in runs)
    each = ", ".join(f"{o.core_per_stream / j.core_per_stream:.2f}x" for o, j in runs)
    nominal_ratio = statistics.median(nominal(o) / nominal(j) for o, j in runs)
    sent_o, kept_o = sum(o.sent for o, _ in runs), sum(o.written for o, _ in runs)
    sent_j, kept_j = sum(j.sent for _, j in runs), sum(j.written for _, j in runs)
    return [
        {
            "name": f"proxy CPU per recorded stream vs Janus 1.1.2 (videoroom, .mjr), {n} "
            f"publishers (medians of {len(runs)} runs: {each})",
            "ours": f"{ours * 100:.2f}% of a core ({1 / ours:.0f} streams/core)",
            "baseline": f"{janus * 100:.2f}% of a core ({1 / janus:.0f} streams/core)",
            "ratio": ratio,
            "goal": "<= 2x Janus's CPU per stream",
        },
        {
            "name": f"... CPU s / (streams x window s), any media taken in, {n} publishers",
            "ours": f"{statistics.median(nominal(o) for o, _ in runs) * 100:.2f}% of a core",
            "baseline": f"{statistics.median(nominal(j) for _, j in runs) * 100:.2f}% (Janus)",
            "ratio": nominal_ratio,
            "goal": "(reference)",
        },
        {
            "name": f"... the proxy receiving only (aiortc's receive path, frames discarded: "
            f"RESGUARDO_CAPTURE_DISCARD) vs Janus, {n} publishers",
            "ours": f"{statistics.median(p.core_per_stream for p in receive_only) * 100:.2f}% "
            "of a core",
            "baseline": f"{janus * 100:.2f}% (Janus)",
            "ratio": statistics.median(
                p.core_per_stream / j.core_per_stream
                for p, (_, j) in zip(receive_only, runs, strict=True)
            ),
            "goal": "(reference: what the capture adds is the rest)",
        },
        {
            "name": f"frames lost, proxy vs Janus ({len(runs)} runs, {n} publishers)",
            "ours": f"{sent_o - kept_o} of {sent_o} lost",
            "baseline": f"{sent_j - kept_j} of {sent_j} lost (complete frames in the .mjr)",
            "ratio": (kept_o / sent_o) / (kept_j / sent_j) if sent_o and kept_j else 0.0,
            "goal": "no frame lost (ratio: share kept, ours / Janus's)",
        },
    ]


async def run() -> list[dict[str, object]]:
    from bench.servers import encoded_media, proxy_servers

    janus_binary(), janus_lib()  # fail early, before any server starts
    streams = int(os.environ.get("RESGUARDO_BENCH_JANUS_STREAMS", "16"))
    window_s = float(os.environ.get("RESGUARDO_BENCH_JANUS_WINDOW_S", "15"))
    repeats = int(os.environ.get("RESGUARDO_BENCH_JANUS_REPEATS", "3"))
    runs: list[tuple[Phase, Phase]] = []
    receive_only: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="bench-janus-") as tmp:
        work = Path(tmp)
        media = encoded_media(work)
        async with proxy_servers(work, "bench-janus") as servers:
            js, server = servers.js, servers.nats
            sides = ["ours", "janus", "receive-only"]
            for r in range(repeats):  # rotate which side goes first
                phases: dict[str, Phase] = {}
                for side in sides[r % 3 :] + sides[: r % 3]:
                    (run_dir := work / f"{side}-{r}").mkdir()
                    mode = "receive-only" if side == "receive-only" else "capture"
                    phases[side] = phase = await (
                        run_janus_phase(run_dir, media, streams, window_s)
                        if side == "janus"
                        else run_phase(js, server.url, run_dir, media, mode, streams, window_s)
                    )
                    print(f"  run {r + 1} {describe(phase)}", file=sys.stderr, flush=True)
                runs.append((phases["ours"], phases["janus"]))
                receive_only.append(phases["receive-only"])
    return rows_for(runs, receive_only)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "publish":
        cfg = json.loads(sys.argv[2])
        from resguardo.packet_media import load_media

        asyncio.run(publish_main(cfg, load_media(Path(cfg["media"]))))
    else:
        raise SystemExit("usage: python -m bench janus")
