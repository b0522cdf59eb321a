"""The uploader as a real process with a real vault, NATS, PostgreSQL and moto S3 server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from shared.events import uploads as up
from shared.events.base import subject_kind
from shared.ids import new_tenant_id
from tests.credentials.helpers import VaultClient
from tests.servers import MotoS3, ServiceProcess

from .support import (
    ACCESS_KEY,
    CANARY,
    new_bucket,
    publish_sealed,
    s3_destination,
    uploads,
    wait_event,
    write_backup,
)

MIB = 1024 * 1024


async def make_destination(
    vault: VaultClient, tenant: str, provider: str, config: dict[str, Any], name: str = "dest"
) -> str:
    reply = await vault.create(tenant, name, provider, config)
    assert reply.destination is not None, reply.problem
    return reply.destination.destination_id


def get_object(s3: Any, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    obj = s3.get_object(Bucket=bucket, Key=key)
    return obj["Body"].read(), obj


async def test_s3_upload_is_confirmed_and_the_backup_purged(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    s3_server: MotoS3,
    backup_root: Path,
) -> None:
    s3 = s3_server.client()
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    tenant = new_tenant_id()
    dest = await make_destination(
        vault, tenant, "s3", s3_destination(s3_server.url, bucket, prefix="calls/")
    )
    # One file bigger than a part (multipart), one small (single put), plus SHA256SUMS/manifest.
    backup = write_backup(backup_root, tenant, {"alice.webm": 6 * MIB + 123, "bob.webm": 2048})
    expected = {f.name: backup.content(f.name) for f in backup.files}
    await publish_sealed(js, backup, dest)

    done = await wait_event(js, backup.recording_id, "uploaded", uploader)
    assert isinstance(done, up.RecordingUploaded)
    assert sorted(f.name for f in done.files) == sorted(expected)
    for f in done.files:
        key = backup.key(f.name, prefix="calls")
        assert f.uri == f"s3://{bucket}/{key}"
        body, obj = get_object(s3, bucket, key)
        assert body == expected[f.name]
        assert f.sha256 == hashlib.sha256(body).hexdigest() == obj["Metadata"]["sha256"]
        assert f.checksum_algorithm == "CRC32" and f.checksum
    by_name = {f.name: f for f in done.files}
    assert by_name["alice.webm"].checksum.endswith("-2")  # multipart: composite of 2 parts
    assert "-" not in by_name["bob.webm"].checksum  # single put: full-object CRC-32
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert len(listed) == len(expected)

    purged = await wait_event(js, backup.recording_id, "backup_purged", uploader)
    assert isinstance(purged, up.BackupPurged)
    assert purged.files == len(expected) + 1  # the outputs and the capture segment
    assert purged.bytes_freed == sum(len(b) for b in expected.values()) + 1000
    assert not backup.folder.exists()

    events = await uploads(js, backup.recording_id)
    kinds = [subject_kind(e) for e in events]
    assert kinds.count("attempt_started") == 1 and kinds.count("file_uploaded") == len(expected)
    assert kinds.count("uploaded") == 1 and "failed" not in kinds and "retained" not in kinds
    started = next(e for e in events if isinstance(e, up.UploadAttemptStarted))
    assert started.destination_id == dest and done.job_id == started.job_id
    raw = b"".join(e.__repr__().encode() for e in events)
    assert CANARY.encode() not in raw
    log = uploader.log_path.read_text()
    assert "recording uploaded" in log
    assert CANARY not in log and ACCESS_KEY not in log


async def test_persist_backup_keeps_the_folder(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    s3_server: MotoS3,
    backup_root: Path,
) -> None:
    s3 = s3_server.client()
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    tenant = new_tenant_id()
    dest = await make_destination(
        vault, tenant, "s3", s3_destination(s3_server.url, bucket, persist_backup=True)
    )
    backup = write_backup(backup_root, tenant, {"alice.webm": 4096})
    await publish_sealed(js, backup, dest)
    await wait_event(js, backup.recording_id, "uploaded", uploader)
    assert "recording uploaded" in uploader.log_path.read_text()
    # The purge would come right after "uploaded" in the same job; wait for the job to end.
    await wait_for_log(uploader, "backup kept (persist_backup)")
    assert backup.folder.exists() and (backup.output / "alice.webm").exists()
    assert await uploads(js, backup.recording_id, "backup_purged") == []


async def wait_for_log(proc: ServiceProcess, text: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if text in proc.log_path.read_text():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never logged:\n{proc.log_path.read_text()[-3000:]}")


async def test_missing_bucket_is_retained_with_the_backup_kept(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    s3_server: MotoS3,
    backup_root: Path,
) -> None:
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "s3", s3_destination(s3_server.url, new_bucket()))
    backup = write_backup(backup_root, tenant, {"alice.webm": 4096})
    await publish_sealed(js, backup, dest)
    kept = await wait_event(js, backup.recording_id, "retained", uploader)
    assert isinstance(kept, up.RecordingRetained)
    assert "bucket does not exist" in kept.reason
    failed = await uploads(js, backup.recording_id, "failed")
    assert len(failed) == 1 and isinstance(failed[0], up.UploadFailed)
    assert not failed[0].transient and not failed[0].will_retry
    assert await uploads(js, backup.recording_id, "uploaded") == []
    assert backup.folder.exists()
    assert CANARY not in uploader.log_path.read_text()


async def test_backup_altered_at_rest_is_never_sent_as_good(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    s3_server: MotoS3,
    backup_root: Path,
) -> None:
    s3 = s3_server.client()
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "s3", s3_destination(s3_server.url, bucket))
    backup = write_backup(backup_root, tenant, {"alice.webm": 6 * MIB})
    # Flip one byte near the end, same size: only the streaming SHA-256 can notice, and only
    # after every part is sent. The multipart upload must be aborted, not completed.
    media = backup.output / "alice.webm"
    data = bytearray(media.read_bytes())
    data[-10] ^= 0xFF
    media.write_bytes(bytes(data))
    await publish_sealed(js, backup, dest)
    kept = await wait_event(js, backup.recording_id, "retained", uploader)
    assert isinstance(kept, up.RecordingRetained)
    assert "alice.webm" in kept.reason and "changed at rest" in kept.reason
    assert await uploads(js, backup.recording_id, "uploaded") == []
    assert await uploads(js, backup.recording_id, "file_uploaded") == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert backup.folder.exists()


async def test_file_destination(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    remote = tmp_path / "remote"
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "file", {"path": str(remote)})
    backup = write_backup(backup_root, tenant, {"alice.webm": 3 * MIB + 5, "bob.webm": 10})
    expected = {f.name: backup.content(f.name) for f in backup.files}
    await publish_sealed(js, backup, dest)
    done = await wait_event(js, backup.recording_id, "uploaded", uploader)
    assert isinstance(done, up.RecordingUploaded)
    for f in done.files:
        path = remote / backup.key(f.name)
        assert path.read_bytes() == expected[f.name]
        assert f.uri == path.as_uri() and f.checksum_algorithm == "SHA256"
    assert sorted(p.name for p in (remote / backup.key("x")).parent.iterdir()) == sorted(expected)
    await wait_event(js, backup.recording_id, "backup_purged", uploader)
    assert not backup.folder.exists()
