"""Run the real transcoder (a process) on what the proxy captured; probe its output with PyAV.

The transcoder writes its output encrypted under the recording's key, media files under
pseudonymous names: ``media_file`` decrypts the participant's file (under its real name) into a
folder outside the backup first, as the customer would get it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
from nats.js import JetStreamContext

from shared import chunkcrypt, natsio
from shared.embedded import NatsServer
from shared.events import transcodes as tx

from ..servers import ServiceProcess, service_env


@dataclass
class Probe:
    codecs: dict[str, str]  # stream type -> codec name
    duration_s: float  # the container's duration
    frames: dict[str, int] = field(default_factory=dict)  # decoded frames per stream type
    errors: list[str] = field(default_factory=list)


async def transcode(
    js: JetStreamContext, nats_server: NatsServer, backup_root: Path, work: Path, rid: str
) -> tx.RecordingSealed:
    """Start ``python -m services.transcoder`` on ``backup_root``; return the sealed event."""
    env = service_env(
        nats_url=nats_server.url,
        data_dir=work / "transcoder-data",
        backup_dir=backup_root,
        transcoder_ack_wait_s="10",
        transcoder_retry_delay_s="0.5",
    )
    proc = ServiceProcess("services.transcoder", env, work / "transcoder.log").start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for kind in ("sealed", "quarantined"):
                done = await natsio.last_event(js, tx.STREAM, tx.STREAM.filter(kind, rid))
                if isinstance(done, tx.RecordingSealed):
                    return done
                if isinstance(done, tx.RecordingQuarantined):
                    raise AssertionError(f"the transcoder quarantined the capture: {done.reason}")
            await asyncio.sleep(0.2)
        log = (work / "transcoder.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"no transcode.sealed within 60 s; transcoder log:\n{log}")
    finally:
        await asyncio.to_thread(proc.stop)


def probe(path: Path) -> Probe:
    """Decode every packet of every stream; libav errors count as errors too."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        errors: list[str] = []
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            result = Probe(
                codecs={s.type: s.codec_context.name for s in container.streams},
                duration_s=(container.duration or 0) / 1_000_000,
            )
            for packet in container.demux():
                if packet.pts is None:
                    continue
                kind = packet.stream.type
                try:
                    n = len(packet.decode())
                except av.FFmpegError as exc:
                    errors.append(f"{kind}: {exc}")
                    continue
                result.frames[kind] = result.frames.get(kind, 0) + n
            for stream in container.streams:
                try:
                    n = len(stream.codec_context.decode(None))  # type: ignore[attr-defined]
                except av.FFmpegError as exc:
                    errors.append(f"{stream.type} flush: {exc}")
                    continue
                result.frames[stream.type] = result.frames.get(stream.type, 0) + n
        errors.extend(f"libav: {msg}" for level, _, msg in logs if level <= av.logging.ERROR)
        result.errors = errors
        return result
    finally:
        av.logging.set_level(previous)


def media_file(
    backup_root: Path, sealed: tx.RecordingSealed, key: bytes | bytearray, dest: Path
) -> Path:
    """The one participant's own file (other media files, such as a composite, are not ours),
    decrypted with the recording's ``key`` into ``dest`` under its real name."""
    files = media_files(backup_root, sealed, key, dest)
    assert len(files) == 1, sealed.files
    return next(iter(files.values()))


def media_files(
    backup_root: Path, sealed: tx.RecordingSealed, key: bytes | bytearray, dest: Path
) -> dict[str, Path]:
    """Every participant's own file by participant id, decrypted with the recording's ``key``
    into ``dest`` under its real name; each checked against the size and SHA-256 of the
    plaintext that the sealed event announced."""
    return {
        f.participant_id: sealed_file(backup_root, sealed, key, dest, f.name)
        for f in sealed.files
        if f.role == "media" and f.participant_id
    }


def sealed_file(
    backup_root: Path, sealed: tx.RecordingSealed, key: bytes | bytearray, dest: Path, name: str
) -> Path:
    """The sealed output file ``name`` (e.g. "manifest.json"), decrypted into ``dest``."""
    (f,) = [f for f in sealed.files if f.name == name]
    output = backup_root / sealed.output_dir
    stored = output / f.stored_name
    assert stored.is_file(), sorted(p.name for p in output.iterdir())
    dest.mkdir(parents=True, exist_ok=True)
    plain = dest / f.name
    size = chunkcrypt.decrypt_file(
        stored, plain, key, recording_id=sealed.recording_id, name=f"{output.name}/{f.stored_name}"
    )
    assert size == f.size, (size, f)
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == f.sha256, f
    return plain
