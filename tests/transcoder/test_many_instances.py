"""Two transcoder processes on two "machines" (each its own spool folder and signing key, one S3
backup store), consuming the same durable: the first is paused (SIGSTOP) in the middle of its
work, past the ack wait and its lease, so the capture is redelivered to the second; then it is
resumed. One ``transcode.sealed`` exists, and the backup holds exactly the files it describes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from shared.backupstore.base import BackupStore
from shared.backupstore.config import from_url
from shared.embedded import NatsServer
from shared.events import captures as cap
from shared.events import transcodes as tx

from ..servers import MotoS3, ServiceProcess, service_env
from .capture_factory import ParticipantSpec, SessionSpec, publish_capture
from .conftest import Vault, wait_event
from .sealed import MARKERS, plain_copy, plaintext_found
from .test_transcoder import transcode_events

ACK_WAIT_S = 3


@pytest.fixture
def bucket(s3_server: MotoS3, tmp_path: Path) -> str:
    name = f"tx-{os.urandom(6).hex()}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def store_env(s3_server: MotoS3, bucket: str, tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "s3-secret"
    secret.write_text(s3_server.secret_key)
    secret.chmod(0o600)
    return {
        "backup_url": f"s3://{bucket}",
        "backup_s3_endpoint": s3_server.url,
        "backup_s3_region": s3_server.region,
        "backup_s3_access_key_id": s3_server.access_key,
        "backup_s3_secret_access_key_file": str(secret),
    }


@pytest.fixture
def procs() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for p in started:
        if p.proc is not None and p.alive():
            os.kill(p.proc.pid, signal.SIGCONT)
        p.stop()


def store_of(env: dict[str, str]) -> BackupStore:
    return from_url(
        env["backup_url"],
        endpoint=env["backup_s3_endpoint"],
        region=env["backup_s3_region"],
        access_key_id=env["backup_s3_access_key_id"],
        secret_access_key_file=Path(env["backup_s3_secret_access_key_file"]),
    )


def start_machine(
    tmp: Path, name: str, nats_url: str, store_env: dict[str, str], **settings: object
) -> ServiceProcess:
    env = service_env(
        nats_url=nats_url,
        data_dir=tmp / f"{name}-data",  # its own signing key: its files differ from the other's
        backup_dir=tmp / f"{name}-spool",
        transcoder_ack_wait_s=str(ACK_WAIT_S),
        transcoder_retry_delay_s="0.5",
        **store_env,
        **{f"transcoder_{k}": str(v) for k, v in settings.items()},
    )
    return ServiceProcess("services.transcoder", env, tmp / f"{name}.log").start()


def log_messages(proc: ServiceProcess, rid: str) -> list[str]:
    if not proc.log_path.exists():
        return []
    out = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("recording_id") == rid:
                out.append(str(record.get("msg")))
    return out


async def until(
    predicate: Callable[[], bool], timeout: float, what: str, explain: Callable[[], str]
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{explain()[-3000:]}")


async def test_paused_first_instance_cannot_seal_twice_nor_overwrite_the_seal(
    js: JetStreamContext,
    nats_server: NatsServer,
    store_env: dict[str, str],
    procs: list[ServiceProcess],
    tmp_path: Path,
    vault: Vault,
) -> None:
    # The capture as the proxy leaves it with an object store: every segment is in the store.
    capture = await vault.capture(
        js,
        tmp_path / "proxy-spool",
        [
            ParticipantSpec("alice", sessions=(SessionSpec(0.0, 10.0),)),
            ParticipantSpec("bob", sessions=(SessionSpec(0.5, 9.0),)),
        ],
        segment_s=5.0,
    )
    store = store_of(store_env)
    try:
        for seg in capture.segments:
            path = capture.segment_path(seg)
            key = path.relative_to(capture.backup_root).as_posix()
            await store.put_file(key, path, sha256=capture.stored_sha256[seg.path])
        total = sum(s.size for s in capture.segments)
        # The first machine writes slowly, so that the pause lands in the middle of its work.
        first = start_machine(
            tmp_path, "first", nats_server.url, store_env, max_write_bytes_per_s=total // 10
        )
        procs.append(first)
        assert first.proc is not None
        await publish_capture(js, capture)
        first_rec = tmp_path / "first-spool" / capture.tenant_id / capture.recording_id

        def first_is_writing() -> bool:
            return any(p.stat().st_size for p in first_rec.glob("output.tmp-*/n*"))

        await until(first_is_writing, 60, "the first instance to write", first.log_path.read_text)
        os.kill(first.proc.pid, signal.SIGSTOP)

        # The capture comes back to the second machine once the first stops answering.
        second = start_machine(tmp_path, "second", nats_server.url, store_env)
        procs.append(second)
        sealed = await wait_event(
            js, "sealed", capture.recording_id, timeout=90, explain=second.log_path.read_text
        )
        assert isinstance(sealed, tx.RecordingSealed)
        assert "transcoding" in log_messages(second, capture.recording_id)

        # The first one wakes up and goes on with what it was doing.
        os.kill(first.proc.pid, signal.SIGCONT)

        def first_is_done() -> bool:
            said = log_messages(first, capture.recording_id)
            return "lease lost; nothing published" in said or "sealed" in said

        await until(first_is_done, 90, "the first instance to finish", first.log_path.read_text)
        for _ in range(300):
            info = await js.consumer_info(cap.STREAM.name, "transcoder")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)

        events = await transcode_events(js, capture.recording_id)
        assert [type(e) for e in events] == [tx.RecordingSealed], events
        # The store holds exactly the sealed files, with the SHA-256 the event says.
        rec_prefix = f"{capture.tenant_id}/{capture.recording_id}"
        outputs = [o for o in await store.list(rec_prefix) if "/capture/" not in o.key]
        assert sorted(o.key for o in outputs) == sorted(
            f"{sealed.output_dir}/{f.stored_name}" for f in sealed.files
        )
        # Each object is ciphertext that decrypts to what the event says (the plaintext's size
        # and SHA-256), and no object key or content shows anything of the call.
        got = tmp_path / "from-store" / Path(sealed.output_dir).name
        got.mkdir(parents=True)
        for f in sealed.files:
            data = await store.read_bytes(f"{sealed.output_dir}/{f.stored_name}")
            (got / f.stored_name).write_bytes(data)
        assert plaintext_found(got, [*MARKERS, b"alice", b"Alice"]) == []
        assert not [o.key for o in await store.list(rec_prefix) if "alice" in o.key.lower()]
        plain = plain_copy(capture, got, sealed.files, tmp_path / "plain")
        for f in sealed.files:
            data = (plain / f.name).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256), f.name
        assert "sealed" not in log_messages(first, capture.recording_id)
        # Neither machine keeps a copy: its folder was only a spool (the lease-losing one too).
        for machine in ("first", "second"):
            spool = tmp_path / f"{machine}-spool" / capture.tenant_id / capture.recording_id
            left = [p for p in spool.rglob("*") if p.is_file()] if spool.exists() else []
            assert left == [], (machine, left)
    finally:
        await store.close()
