"""Outage: the storage server is down for a while; recordings are retained with their backups,
then delivered by re-send (as the API publishes it) once the server is back. Nothing is lost."""

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
from .support import (
    publish_resend,
    publish_sealed,
    start_uploader,
    uploads,
    wait_event,
    write_backup,
)
from .test_uploader import make_destination


@pytest.fixture(params=("s3", "gcs", "azure", "ftp", "ftps"))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, tmp_path)
    try:
        yield s
    finally:
        s.close()


async def test_outage_retains_then_resend_delivers_everything(
    js: JetStreamContext,
    vault: VaultClient,
    nats_server: NatsServer,
    store: Store,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    store.prepare()
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, store.provider, store.config())
    backups = [write_backup(backup_root, tenant, {"alice.webm": 2 * MIB + i}) for i in range(3)]
    contents = {b.recording_id: {f.name: b.content(f.name) for f in b.files} for b in backups}
    store.stop()  # the server goes away (the proxy in front of it stays)
    proc = start_uploader(
        tmp_path,
        nats_server.url,
        backup_root,
        raw_env=store.uploader_env(),
        upload_max_attempts="2",
        upload_backoff_s="0.2",
    )
    try:
        for b in backups:
            await publish_sealed(js, b, dest)
        for b in backups:
            kept = await wait_event(js, b.recording_id, "retained", proc, timeout=90)
            assert isinstance(kept, up.RecordingRetained) and "gave up after 2" in kept.reason
            assert b.folder.exists()
            assert await uploads(js, b.recording_id, "uploaded") == []

        store.restart()  # back, with what it held before
        for i, b in enumerate(backups):
            await publish_resend(js, b, dest, f"back{i}")
        for b in backups:
            done = await wait_event(js, b.recording_id, "uploaded", proc, timeout=90)
            assert isinstance(done, up.RecordingUploaded) and ":resend-back" in done.job_id
            await wait_event(js, b.recording_id, "backup_purged", proc)
            assert not b.folder.exists()
    finally:
        proc.stop()
    assert store.keys() == sorted(b.key(name) for b in backups for name in contents[b.recording_id])
    for b in backups:
        for name, body in contents[b.recording_id].items():
            assert store.read(b.key(name)) == body
