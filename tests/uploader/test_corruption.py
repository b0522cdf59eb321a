"""Corruption in transit: a proxy flips one byte of one request body on its way to the server.

With each backend, in the verify mode it supports, the damage is detected, the attempt that carried
it confirms nothing, and a retry delivers the file intact. (moto stores whatever checksum it is
sent, so S3 is proven by readback here; a real S3 refuses the part with BadDigest.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from shared.embedded import NatsServer
from shared.events import uploads as up
from shared.ids import new_tenant_id
from tests.credentials.helpers import VaultClient

from .storage import MIB, Store, make_store
from .support import publish_sealed, start_uploader, uploads, wait_event, write_backup
from .test_uploader import make_destination

# (store, verify mode, what the failure must name: the check that caught it)
CASES = [
    ("s3", "readback", "read back"),
    ("gcs", "checksum", "CRC32C"),  # the CRC32C the server reports is not ours
    ("azure", "checksum", "MD5"),  # Azurite refuses the block (Md5Mismatch)
    ("ftp", "readback", "read back"),
    ("ftp+hash", "checksum", "SHA-256"),  # the server's HASH
]


@pytest.fixture(params=CASES, ids=[f"{k}-{m}" for k, m, _ in CASES])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, str, str]]:
    kind, mode, caught_by = request.param
    store = make_store(kind, tmp_path)
    assert mode in store.corruption_modes
    try:
        yield store, mode, caught_by
    finally:
        store.close()


async def test_a_flipped_byte_is_caught_and_the_retry_delivers_it_intact(
    js: JetStreamContext,
    vault: VaultClient,
    nats_server: NatsServer,
    case: tuple[Store, str, str],
    backup_root: Path,
    tmp_path: Path,
) -> None:
    store, mode, caught_by = case
    store.prepare()
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, store.provider, store.config(verify=mode))
    backup = write_backup(backup_root, tenant, {"alice.webm": 3 * MIB})
    content = backup.content("alice.webm")
    store.proxy.corrupt_once(min_body=MIB)
    proc = start_uploader(
        tmp_path, nats_server.url, backup_root, raw_env=store.uploader_env(), upload_backoff_s="0.3"
    )
    try:
        await publish_sealed(js, backup, dest)
        failed = await wait_event(js, backup.recording_id, "failed", proc)
        assert isinstance(failed, up.UploadFailed)
        assert failed.transient and failed.will_retry and "alice.webm" in failed.reason
        assert caught_by in failed.reason, failed.reason
        done = await wait_event(js, backup.recording_id, "uploaded", proc)
        assert isinstance(done, up.RecordingUploaded)
    finally:
        proc.stop()
    assert store.proxy.corrupted == 1  # the damage really happened, once
    assert done.job_id != failed.job_id  # the damaged attempt confirmed nothing...
    confirmed = [
        e
        for e in await uploads(js, backup.recording_id, "file_uploaded")
        if isinstance(e, up.FileUploaded) and e.file.name == "alice.webm"
    ]
    assert [e.job_id for e in confirmed] == [done.job_id]  # ...not even that one file
    assert store.read(backup.key("alice.webm")) == content
    assert await uploads(js, backup.recording_id, "retained") == []
