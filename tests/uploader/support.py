"""Helpers for the uploader's tests: sealed backups on disk, events in, real processes running."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from nats.js import JetStreamContext

from shared import chunkcrypt, natsio
from shared.events import AnyEvent, event_id
from shared.events import transcodes as tr_events
from shared.events import uploads as up_events
from shared.events.transcodes import SealedFile
from shared.ids import new_recording_id
from shared.integrity import sha256sums
from shared.recording_key import fetch_recording_key
from tests.credentials.helpers import publish_resend as publish_resend_of
from tests.credentials.helpers import publish_started
from tests.servers import ServiceProcess, service_env

CANARY = "CANARY-uploader-5d1f0e"  # the S3 secret key: moto accepts any, logs must never show it
ACCESS_KEY = "AKIAUPLOADERTEST0001"


def start_uploader(
    tmp: Path,
    nats_url: str,
    backup_dir: Path,
    name: str = "uploader",
    raw_env: dict[str, str] | None = None,
    **extra: str | Path,
) -> ServiceProcess:
    settings: dict[str, str | Path] = {
        "nats_url": nats_url,
        "data_dir": tmp / f"{name}-data",
        "backup_dir": backup_dir,
        "log_level": "DEBUG",
        "upload_backoff_s": "0.5",
        "upload_part_size": str(5 * 1024 * 1024),
    }
    env = service_env(**{**settings, **extra}) | (raw_env or {})
    return ServiceProcess("services.uploader", env, tmp / f"{name}.log").start()


def s3_destination(url: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "endpoint_url": url,
        "region": "us-east-1",
        "path_style": True,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": CANARY,
        **extra,
    }


def new_bucket() -> str:
    return f"rg-{uuid.uuid4().hex[:12]}"


@dataclass
class Backup:
    root: Path
    tenant_id: str
    recording_id: str
    files: list[SealedFile]
    started_at: datetime
    data_key: bytes | None = None  # the recording's key when the outputs are encrypted

    @property
    def folder(self) -> Path:
        return self.root / self.tenant_id / self.recording_id

    @property
    def output(self) -> Path:
        return self.folder / "output"

    def content(self, name: str) -> bytes:
        """The file's plaintext (what the destination must receive)."""
        data = (self.output / name).read_bytes()
        if self.data_key is None:
            return data
        chunks = chunkcrypt.decrypt_stream(
            io.BytesIO(data), self.data_key, recording_id=self.recording_id, name=f"output/{name}"
        )
        return b"".join(chunks)

    def key(self, name: str, prefix: str = "") -> str:
        date = self.started_at.date().isoformat()
        key = f"{self.tenant_id}/{date}/{self.recording_id}/{name}"
        return f"{prefix}/{key}" if prefix else key


def sealed_file(
    path: Path, role: str, content_type: str = "application/octet-stream"
) -> SealedFile:
    """The sealed-file entry of a file on disk, as the transcoder writes it."""
    data = path.read_bytes()
    return SealedFile(
        name=path.name,
        role=role,  # type: ignore[arg-type]
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        crc32=zlib.crc32(data),
        content_type=content_type,
    )


def write_backup(
    root: Path,
    tenant_id: str,
    media_sizes: dict[str, int],
    *,
    key: bytes | bytearray | None = None,
    rid: str | None = None,
) -> Backup:
    """A recording's backup as the transcoder leaves it: capture segments and sealed outputs;
    with ``key`` (the recording's, from the vault: ``encrypted_backup``) encrypted as the
    transcoder writes them, else as a backup from before encryption."""
    rid = rid or new_recording_id()
    folder = root / tenant_id / rid
    seg = folder / "capture" / "alice" / "alice-1-audio" / "000000.rgc"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(os.urandom(1000))
    out = folder / "output"
    out.mkdir(parents=True)
    files = []
    for name, size in media_sizes.items():
        (out / name).write_bytes(os.urandom(size))
        files.append(sealed_file(out / name, "media", "video/webm"))
    (out / "SHA256SUMS").write_text(sha256sums((f.name, f.sha256) for f in files))
    (out / "manifest.json").write_text(
        json.dumps({"recording_id": rid, "files": [f.name for f in files]})
    )
    files.append(sealed_file(out / "SHA256SUMS", "checksums", "text/plain"))
    files.append(sealed_file(out / "manifest.json", "manifest", "application/json"))
    if key is not None:
        for f in files:  # sealed digests are the plaintext's; the files become ciphertext
            plain = out / f.name
            sealed = plain.with_name(plain.name + ".enc")
            chunkcrypt.encrypt_file(plain, sealed, key, recording_id=rid, name=f"output/{f.name}")
            sealed.replace(plain)
    stored_key = bytes(key) if key is not None else None
    return Backup(root, tenant_id, rid, files, datetime.now(UTC), stored_key)


async def encrypted_backup(
    js: JetStreamContext, root: Path, tenant_id: str, media_sizes: dict[str, int], dest: str
) -> Backup:
    """``write_backup`` encrypted under the recording's own key, which the test asks of the real
    vault as the transcoder would (so the recording is started first)."""
    rid = new_recording_id()
    await publish_started(js, rid, tenant_id, dest)
    key = await fetch_recording_key(
        js._nc, recording_id=rid, tenant_id=tenant_id, purpose="transcode", service="test"
    )
    try:
        return write_backup(root, tenant_id, media_sizes, key=key.data_key, rid=rid)
    finally:
        key.wipe()


async def publish_sealed(js: JetStreamContext, backup: Backup, destination_id: str) -> None:
    await publish_started(
        js, backup.recording_id, backup.tenant_id, destination_id, at=backup.started_at
    )
    await natsio.publish(
        js,
        tr_events.RecordingSealed(
            event_id=event_id(backup.recording_id, "sealed"),
            recording_id=backup.recording_id,
            tenant_id=backup.tenant_id,
            occurred_at=datetime.now(UTC),
            output_dir=f"{backup.tenant_id}/{backup.recording_id}/output",
            files=backup.files,
        ),
    )


async def publish_resend(
    js: JetStreamContext, backup: Backup, destination_id: str, request_id: str, name: str = "dest"
) -> None:
    """What the API publishes on ``POST /v1/recordings/{id}/resend``."""
    await publish_resend_of(
        js, backup.recording_id, backup.tenant_id, destination_id, request_id, name
    )


async def uploads(js: JetStreamContext, rid: str, kind: str = "*") -> list[AnyEvent]:
    return [e for _, e in await natsio.read_subject(js, up_events.STREAM, f"uploads.{rid}.{kind}")]


async def wait_event(
    js: JetStreamContext,
    rid: str,
    kind: str,
    proc: ServiceProcess | None = None,
    timeout: float = 60,
    where: Any = None,
) -> AnyEvent:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for event in await uploads(js, rid, kind):
            if where is None or where(event):
                return event
        if proc is not None and not proc.alive():
            raise AssertionError(f"uploader exited:\n{proc.log_path.read_text()[-3000:]}")
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"no uploads.{rid}.{kind} within {timeout:.0f} s\n{await _story(js, rid, proc)}"
    )


async def _story(js: JetStreamContext, rid: str, proc: ServiceProcess | None) -> str:
    """What happened to one recording: its upload events, then its log lines and the log's end
    (the tail alone shows other recordings when several run at once)."""
    events = [msgspec.json.encode(e).decode()[:400] for e in await uploads(js, rid)]
    text = proc.log_path.read_text() if proc else ""
    mine = [line[:600] for line in text.splitlines() if rid in line][-40:]
    return "\n".join(["events:", *events, f"log lines of {rid}:", *mine, "log end:", text[-2000:]])
