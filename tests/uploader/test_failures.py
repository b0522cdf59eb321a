"""Transient outages are retried; a crash mid-upload ends with exactly one intact copy."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer
from nats.js import JetStreamContext

from shared.embedded import NatsServer, free_port
from shared.events import uploads as up
from shared.ids import new_tenant_id
from tests.credentials.helpers import VaultClient
from tests.servers import MotoS3

from .support import (
    encrypted_backup,
    new_bucket,
    publish_sealed,
    s3_destination,
    start_uploader,
    uploads,
    wait_event,
    write_backup,
)
from .test_uploader import make_destination

MIB = 1024 * 1024


def client(url: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def test_transient_outage_is_retried_until_the_server_is_back(
    js: JetStreamContext,
    vault: VaultClient,
    nats_server: NatsServer,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    # An in-process moto server: its buckets live in this process, so a server restarted on the
    # same port still has them (a restarted moto process would start empty).
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    bucket = new_bucket()
    s3 = client(url)
    s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "s3", s3_destination(url, bucket))
    server.stop()  # the destination goes away

    proc = start_uploader(
        tmp_path, nats_server.url, backup_root, upload_backoff_s="2", upload_max_attempts="20"
    )
    restarted: ThreadedMotoServer | None = None
    try:
        backup = write_backup(backup_root, tenant, {"alice.webm": 6 * MIB})
        content = backup.content("alice.webm")
        await publish_sealed(js, backup, dest)
        failed = await wait_event(
            js, backup.recording_id, "failed", proc, where=lambda e: e.will_retry
        )
        assert isinstance(failed, up.UploadFailed) and failed.transient
        assert "could not reach the S3 destination" in failed.reason
        assert await uploads(js, backup.recording_id, "uploaded") == []
        assert backup.folder.exists()

        restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        restarted.start()  # the same port: the destination is back
        done = await wait_event(js, backup.recording_id, "uploaded", proc, timeout=90)
        assert isinstance(done, up.RecordingUploaded)
        body = s3.get_object(Bucket=bucket, Key=backup.key("alice.webm"))["Body"].read()  # type: ignore[attr-defined]
        assert body == content
        assert await uploads(js, backup.recording_id, "retained") == []
        attempts = await uploads(js, backup.recording_id, "attempt_started")
        assert len(attempts) >= 2  # the first failed, a later one succeeded
        await wait_event(js, backup.recording_id, "backup_purged", proc)
    finally:
        proc.stop()
        if restarted is not None:
            restarted.stop()


async def test_kill_9_mid_upload_then_restart_gives_one_intact_copy(
    js: JetStreamContext,
    vault: VaultClient,
    nats_server: NatsServer,
    s3_server: MotoS3,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    s3 = s3_server.client()
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "s3", s3_destination(s3_server.url, bucket))
    backup = write_backup(backup_root, tenant, {"big.webm": 40 * MIB, "small.webm": 1000})
    expected = {f.name: hashlib.sha256(backup.content(f.name)).hexdigest() for f in backup.files}
    key = backup.key("big.webm")

    first = start_uploader(tmp_path, nats_server.url, backup_root, "up1", upload_ack_wait_s="4")
    try:
        await publish_sealed(js, backup, dest)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            pending = s3.list_multipart_uploads(Bucket=bucket).get("Uploads") or []
            if any(u["Key"] == key for u in pending):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the multipart upload never started")
        first.kill()
    finally:
        first.stop()
    # Killed mid-upload: nothing confirmed, no object, a half-done multipart upload left over.
    assert await uploads(js, backup.recording_id, "uploaded") == []
    assert s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 0

    second = start_uploader(tmp_path, nats_server.url, backup_root, "up2", upload_ack_wait_s="4")
    try:
        await wait_event(js, backup.recording_id, "uploaded", second, timeout=90)
        await wait_event(js, backup.recording_id, "backup_purged", second)
    finally:
        second.stop()
    assert len(await uploads(js, backup.recording_id, "uploaded")) == 1
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(backup.key(n) for n in expected)
    for name, sha in expected.items():
        body = s3.get_object(Bucket=bucket, Key=backup.key(name))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # resumed and completed
    attempts = await uploads(js, backup.recording_id, "attempt_started")
    assert [a.attempt for a in attempts if isinstance(a, up.UploadAttemptStarted)] == [1, 2]
    assert not backup.folder.exists()


async def test_spent_attempts_retain_the_recording(
    js: JetStreamContext,
    vault: VaultClient,
    nats_server: NatsServer,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "s3", s3_destination(url, new_bucket()))
    proc = start_uploader(
        tmp_path, nats_server.url, backup_root, upload_backoff_s="0.2", upload_max_attempts="2"
    )
    try:
        backup = write_backup(backup_root, tenant, {"alice.webm": 100})
        await publish_sealed(js, backup, dest)
        kept = await wait_event(js, backup.recording_id, "retained", proc, timeout=90)
        assert isinstance(kept, up.RecordingRetained) and "gave up after 2 attempts" in kept.reason
        failures = await uploads(js, backup.recording_id, "failed")
        assert [
            (f.transient, f.will_retry) for f in failures if isinstance(f, up.UploadFailed)
        ] == [
            (True, True),
            (True, False),
        ]
        assert backup.folder.exists()
    finally:
        proc.stop()


async def test_an_output_changed_at_rest_is_retained_and_nothing_of_it_is_sent(
    js: JetStreamContext,
    vault: VaultClient,
    nats_server: NatsServer,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    """Someone with write access to the backup flips one byte of an encrypted output (its size,
    and so every check but authentication, unchanged): the uploader refuses it before any of its
    bytes leave, retains the recording and says which file."""
    remote = tmp_path / "remote"
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "file", {"path": str(remote)})
    backup = await encrypted_backup(js, backup_root, tenant, {"alice.webm": 300_000}, dest)
    path = backup.output / "alice.webm"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    proc = start_uploader(tmp_path, nats_server.url, backup_root, upload_max_attempts="1")
    try:
        await publish_sealed(js, backup, dest)
        kept = await wait_event(js, backup.recording_id, "retained", proc, timeout=90)
        assert isinstance(kept, up.RecordingRetained)
        assert "alice.webm" in kept.reason and "authentication" in kept.reason, kept.reason
        assert backup.folder.exists()
    finally:
        proc.stop()
    sent = [p for p in remote.rglob("*") if p.is_file()] if remote.exists() else []
    assert not any(p.name.startswith("alice.webm") for p in sent), sent
