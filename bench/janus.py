"""Janus's side of bench/bench_janus.py: the server (Debian's ``janus``, in a folder of its own),
its HTTP REST API as a publisher uses it, and its per-track recordings (``.mjr``).

The .mjr format, as Janus 1.1.2 writes it (src/record.c) and janus-pp-rec reads it:

- ``MJR00002`` (8 bytes), written when the recorder opens;
- on the first packet: a 2-byte big-endian length and a JSON info header (``t``: "a"/"v"/"d",
  ``c``: codec, ``s``: created, ``u``: real time in microseconds of the first packet, ...);
- then one record per RTP packet: ``MEET``, a 4-byte big-endian time in milliseconds since the
  first packet (monotonic), a 2-byte big-endian length and the RTP packet itself (decrypted:
  plain RTP, header included; data tracks prepend an 8-byte real time to their payload).

A video frame is one RTP timestamp; it counts as complete when its packets have consecutive
sequence numbers, the first carries the VP8 start-of-partition-0 bit and the last the marker.
An audio frame is one RTP packet (one 20 ms Opus frame), counted once per sequence number.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JANUS_LIB_GLOBS = ("/usr/lib/*/janus", "/usr/lib/janus", "/opt/janus/lib/janus")
KEEPALIVE_S = 20.0


# -- the server and its API ------------------------------------------------------------------


def janus_binary() -> str:
    janus = shutil.which("janus")
    if janus is None:
        raise RuntimeError("janus is not installed: run scripts/bench-deps.sh (Debian's janus)")
    return janus


def janus_lib() -> Path:
    for pattern in JANUS_LIB_GLOBS:
        for lib in sorted(glob.glob(pattern)):
            if (Path(lib) / "plugins" / "libjanus_videoroom.so").exists():
                return Path(lib)
    raise RuntimeError("janus's videoroom plugin was not found: run scripts/bench-deps.sh")


def jcfg(sections: dict[str, dict[str, object]]) -> str:
    """Janus's configuration syntax (libconfig): ``name: { key = value ... }``."""
    return "".join(
        f"{name}: {{\n" + "".join(f"  {k} = {json.dumps(v)}\n" for k, v in body.items()) + "}\n"
        for name, body in sections.items()
    )


class JanusServer:
    """Janus with only the HTTP transport and the VideoRoom plugin, in a folder of its own."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.conf = work / "conf"
        self.rec_dir = work / "rec"
        self.log = work / "janus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    def write_config(self) -> None:
        from shared.embedded import free_port

        lib, conf, self.port = janus_lib(), self.conf, free_port()
        for sub, name in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")):
            (conf / sub).mkdir(parents=True)
            (conf / sub / name).symlink_to((lib / sub / name).resolve())
        (conf / "none").mkdir()
        self.rec_dir.mkdir(parents=True)
        general: dict[str, object] = {
            "configs_folder": str(conf),
            "plugins_folder": str(conf / "plugins"),
            "transports_folder": str(conf / "transports"),
            "events_folder": str(conf / "none"),
            "loggers_folder": str(conf / "none"),
            "log_to_file": str(self.log),
            "debug_level": 4,
            "recordings_tmp_ext": "tmp",  # open recordings are .mjr.tmp, renamed when closed
        }
        http: dict[str, object] = {
            "json": "compact",
            "base_path": "/janus",
            "http": True,
            "port": self.port,
            "ip": "127.0.0.1",
            "https": False,
        }
        files: dict[str, dict[str, dict[str, object]]] = {
            "janus": {"general": general, "media": {}, "nat": {}, "plugins": {}, "transports": {}},
            "janus.transport.http": {"general": http, "admin": {"admin_http": False}},
            "janus.plugin.videoroom": {"general": {}},
        }
        for name, sections in files.items():
            (conf / f"{name}.jcfg").write_text(jcfg(sections))

    def start(self) -> JanusServer:
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Start janus (from the main thread: it is sent SIGTERM when the thread that started
        it dies, so a killed bench leaves no janus behind)."""
        from shared.procs import die_with_parent

        self.write_config()
        out = (self.work / "janus.out").open("wb")
        self.proc = subprocess.Popen(
            [janus_binary(), "-F", str(self.conf), "-C", str(self.conf / "janus.jcfg"), "-o"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        out.close()

    def wait_ready(self) -> JanusServer:
        """Blocks until janus's HTTP API listens; stops it if it does not (raising)."""
        from shared.embedded import wait_for_port

        try:
            wait_for_port("127.0.0.1", self.port, 30.0)
        except BaseException:
            self.stop()
            raise RuntimeError(f"janus did not start:\n{self.tail()}") from None
        return self

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-3000:]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(15)


# -- the publisher process: Janus's HTTP API -------------------------------------------------


class JanusApi:
    """One Janus session over the REST API: requests, async plugin events, keepalives."""

    def __init__(self, http: Any, base: str) -> None:
        self.http, self.base = http, base
        self.session = 0
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or secrets.token_hex(8)}
        async with self.http.post(f"{self.base}{path}", json=body) as resp:
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus refused {body.get('janus')}: {reply.get('error')}")
        return reply

    async def open(self) -> None:
        self.session = int((await self.post("", {"janus": "create"}))["data"]["id"])
        self.tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keepalive())]

    async def attach(self) -> int:
        body = {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        return int((await self.post(f"/{self.session}", body))["data"]["id"])

    async def message(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request: its plugin data."""
        reply = await self.post(f"/{self.session}/{handle}", {"janus": "message", "body": body})
        data: dict[str, Any] = reply["plugindata"]["data"]
        if "error" in data:
            raise RuntimeError(f"videoroom {body['request']}: {data['error']}")
        return data

    async def call(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """An asynchronous plugin request: the event that answers it (acked first)."""
        tx = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[tx] = fut
        msg: dict[str, Any] = {"janus": "message", "body": body, "transaction": tx}
        if jsep is not None:
            msg["jsep"] = jsep
        try:
            await self.post(f"/{self.session}/{handle}", msg)
            event = await asyncio.wait_for(fut, 30)
        finally:
            self.pending.pop(tx, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise RuntimeError(f"videoroom {body['request']}: {data['error']}")
        return event

    async def _poll(self) -> None:
        while True:
            async with self.http.get(f"{self.base}/{self.session}?maxev=32") as resp:
                got = await resp.json(content_type=None)
            for event in got if isinstance(got, list) else [got]:
                fut = self.pending.get(event.get("transaction", ""))
                if fut is not None and event.get("janus") == "event" and not fut.done():
                    fut.set_result(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            await self.post(f"/{self.session}", {"janus": "keepalive"})

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.post(f"/{self.session}", {"janus": "destroy"})


# -- recordings (.mjr) -----------------------------------------------------------------------


MAGIC = b"MJR00002"
RECORD = b"MEET"


class MjrError(ValueError):
    """Not an .mjr file this reader understands."""


@dataclass
class Packet:
    at_ms: int  # ms since the recording's first packet
    seq: int  # extended (unwrapped) RTP sequence number
    timestamp: int
    marker: bool
    payload: bytes


@dataclass
class Recording:
    info: dict[str, Any]
    packets: list[Packet] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return {"a": "audio", "v": "video", "d": "data"}.get(str(self.info.get("t")), "?")

    @property
    def first_real_s(self) -> float:
        """Real (wall-clock) time of the first packet, in seconds since the epoch."""
        return float(self.info.get("u", 0)) / 1e6

    def frames(self, since: float | None = None, until: float | None = None) -> FrameCount:
        """Frames in the recording; with ``since``/``until`` (epoch seconds), only those whose
        first packet was written in that interval."""
        count = FrameCount()
        if self.kind == "audio":
            seen: set[int] = set()
            for p in self.packets:
                if p.seq not in seen and self._within(p, since, until):
                    seen.add(p.seq)
            count.frames = count.complete = len(seen)
            return count
        by_ts: dict[int, list[Packet]] = {}
        for p in self.packets:
            by_ts.setdefault(p.timestamp, []).append(p)
        for group in by_ts.values():
            first = min(group, key=lambda p: p.seq)
            if not self._within(min(group, key=lambda p: p.at_ms), since, until):
                continue
            count.frames += 1
            seqs = sorted({p.seq for p in group})
            last = max(group, key=lambda p: p.seq)
            if (
                seqs[-1] - seqs[0] + 1 == len(seqs)
                and last.marker
                and vp8_starts_frame(first.payload)
            ):
                count.complete += 1
        return count

    def _within(self, p: Packet, since: float | None, until: float | None) -> bool:
        at = self.first_real_s + p.at_ms / 1000
        return (since is None or at >= since) and (until is None or at < until)


@dataclass
class FrameCount:
    frames: int = 0  # distinct frames with at least one packet recorded
    complete: int = 0  # of which every packet was recorded


def vp8_starts_frame(payload: bytes) -> bool:
    """The VP8 payload descriptor (RFC 7741) has S=1 and partition index 0."""
    return bool(payload) and payload[0] & 0x10 != 0 and payload[0] & 0x0F == 0


def parse_rtp(packet: bytes) -> tuple[bool, int, int, bytes]:
    """(marker, sequence number, timestamp, payload) of an RTP packet."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        raise MjrError("not an RTP packet")
    b0, b1, seq, ts = struct.unpack_from("!BBHI", packet)
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 2-byte profile, 2-byte length in 32-bit words
        if len(packet) < offset + 4:
            raise MjrError("truncated RTP header extension")
        (words,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * words
    end = len(packet)
    if b0 & 0x20 and end > offset:  # padding: its length is the last byte
        end -= packet[-1]
    if offset > end:
        raise MjrError("RTP header longer than the packet")
    return bool(b1 & 0x80), seq, ts, packet[offset:end]


def read_mjr(path: Path) -> Recording:
    """Parse one .mjr file (a file whose recorder saw no packet holds only the magic)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise MjrError(f"{path.name}: no {MAGIC.decode()} magic")
    if len(data) == len(MAGIC):
        return Recording(info={})
    (n,) = struct.unpack_from("!H", data, 8)
    info = json.loads(data[10 : 10 + n])
    rec = Recording(info=info)
    offset, last_seq = 10 + n, None
    while offset + 10 <= len(data):
        if data[offset : offset + 4] != RECORD:
            raise MjrError(f"{path.name}: no record header at offset {offset}")
        at_ms, length = struct.unpack_from("!IH", data, offset + 4)
        body = data[offset + 10 : offset + 10 + length]
        offset += 10 + length
        if len(body) < length:
            break  # the last record was cut short (Janus still writing): stop there
        if rec.kind == "data" or length < 12:
            continue
        marker, seq, ts, payload = parse_rtp(body)
        if last_seq is not None:  # unwrap around last_seq
            seq = last_seq + ((seq - last_seq + 0x8000) & 0xFFFF) - 0x8000
        last_seq = seq
        rec.packets.append(Packet(at_ms, seq, ts, marker, payload))
    return rec


def count_frames(
    paths: list[Path], since: float | None = None, until: float | None = None
) -> tuple[int, int, int]:
    """Over .mjr files: (frames with a packet recorded, complete frames, frames whose first
    packet was written between ``since`` and ``until``, in epoch seconds)."""
    frames = complete = during = 0
    for path in paths:
        rec = read_mjr(path)
        whole = rec.frames()
        frames, complete = frames + whole.frames, complete + whole.complete
        during += rec.frames(since, until).frames
    return frames, complete, during
