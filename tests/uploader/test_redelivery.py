"""Redeliveries and resends: state checks on consume make every re-run harmless."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from nats.js import JetStreamContext

from shared import natsio
from shared.events import event_id
from shared.events import transcodes as tr
from shared.events import uploads as up
from shared.ids import new_tenant_id
from tests.credentials.helpers import VaultClient
from tests.servers import ServiceProcess

from .support import publish_resend, publish_sealed, uploads, wait_event, write_backup
from .test_uploader import make_destination


async def consumer_idle(js: JetStreamContext, stream: str, durable: str) -> None:
    """Wait until the durable consumer has handled (acked) everything in its stream."""
    for _ in range(300):
        info = await js.consumer_info(stream, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"consumer {durable} never caught up")


async def test_a_second_sealed_event_after_upload_is_skipped(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    tenant = new_tenant_id()
    dest = await make_destination(
        vault, tenant, "file", {"path": str(tmp_path / "remote"), "persist_backup": True}
    )
    backup = write_backup(backup_root, tenant, {"alice.webm": 100})
    await publish_sealed(js, backup, dest)
    await wait_event(js, backup.recording_id, "uploaded", uploader)
    # The transcoder sealed it again (say, after a crash, beyond the dedup window): new event id.
    await natsio.publish(
        js,
        tr.RecordingSealed(
            event_id=event_id(backup.recording_id, "sealed", "again"),
            recording_id=backup.recording_id,
            tenant_id=tenant,
            occurred_at=datetime.now(UTC),
            output_dir=f"{tenant}/{backup.recording_id}/output",
            files=backup.files,
        ),
    )
    await consumer_idle(js, "TRANSCODES", "uploader-sealed")
    assert len(await uploads(js, backup.recording_id, "attempt_started")) == 1
    assert len(await uploads(js, backup.recording_id, "uploaded")) == 1


async def test_crash_after_uploaded_before_purge_is_finished_on_redelivery(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "file", {"path": str(tmp_path / "remote")})
    backup = write_backup(backup_root, tenant, {"alice.webm": 100})
    rid = backup.recording_id
    # The state a crash right after publishing "uploaded" leaves: uploaded, backup still there.
    job_id = f"{rid}:sealed:1"
    await natsio.publish(
        js,
        up.RecordingUploaded(
            event_id=event_id(rid, "uploaded-by-a-crashed-run"),
            recording_id=rid,
            tenant_id=tenant,
            occurred_at=datetime.now(UTC),
            job_id=job_id,
            destination_id=dest,
            files=[],
        ),
    )
    await publish_sealed(js, backup, dest)
    purged = await wait_event(js, rid, "backup_purged", uploader)
    assert isinstance(purged, up.BackupPurged) and purged.job_id == job_id
    assert purged.files == len(backup.files) + 1
    assert not backup.folder.exists()
    assert await uploads(js, rid, "attempt_started") == []  # nothing uploaded twice


async def test_resend_to_another_destination(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    tenant = new_tenant_id()
    first = await make_destination(
        vault, tenant, "file", {"path": str(tmp_path / "one"), "persist_backup": True}, "one"
    )
    second = await make_destination(vault, tenant, "file", {"path": str(tmp_path / "two")}, "two")
    backup = write_backup(backup_root, tenant, {"alice.webm": 100})
    rid = backup.recording_id
    content = backup.content("alice.webm")
    await publish_sealed(js, backup, first)
    await wait_event(js, rid, "uploaded", uploader)
    assert backup.folder.exists()  # kept by the first destination

    await publish_resend(js, backup, second, "r1", "two")
    done = await wait_event(
        js, rid, "uploaded", uploader, where=lambda e: e.destination_id == second
    )
    assert isinstance(done, up.RecordingUploaded) and ":resend-r1:" in done.job_id
    await wait_event(js, rid, "backup_purged", uploader)  # the second one does not keep it
    assert not backup.folder.exists()
    assert (tmp_path / "two" / backup.key("alice.webm")).read_bytes() == content

    # Nothing left to resend: refused with a reason, nothing retained.
    await publish_resend(js, backup, first, "r2", "one")
    failed = await wait_event(js, rid, "failed", uploader)
    assert isinstance(failed, up.UploadFailed) and not failed.will_retry
    assert "already deleted" in failed.reason
    assert await uploads(js, rid, "retained") == []
