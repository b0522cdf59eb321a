"""Two uploader processes on the same durables: the first is paused (SIGSTOP) in the middle of an
upload, past the ack wait and its lease, so the job is redelivered to the second; then it is
resumed. The recording is uploaded once, its backup purged once, and the paused one publishes
nothing after it wakes up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from shared.embedded import NatsServer
from shared.events import uploads as up
from shared.ids import new_tenant_id
from tests.credentials.helpers import VaultClient
from tests.servers import ServiceProcess

from .storage import MIB, S3Store
from .support import publish_sealed, start_uploader, uploads, wait_event, write_backup
from .test_redelivery import consumer_idle
from .test_uploader import make_destination

ACK_WAIT_S = "3"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Store]:
    store = S3Store(tmp_path)
    try:
        store.prepare()
        yield store
    finally:
        store.close()


@pytest.fixture
def procs() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for p in started:
        if p.proc is not None and p.alive():
            os.kill(p.proc.pid, signal.SIGCONT)
        p.stop()


async def until(predicate: Callable[[], bool], timeout: float, explain: Callable[[], str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s\n{explain()[-3000:]}")


def messages(proc: ServiceProcess, rid: str) -> list[str]:
    out = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("recording_id") == rid or record.get("msg") == "handler crashed":
                out.append(str(record.get("msg")))
    return out


async def test_paused_first_uploader_publishes_nothing_and_the_job_is_done_once(
    js: JetStreamContext,
    vault: VaultClient,
    nats_server: NatsServer,
    s3: S3Store,
    backup_root: Path,
    tmp_path: Path,
    procs: list[ServiceProcess],
) -> None:
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "s3", s3.config())
    backup = write_backup(backup_root, tenant, {"alice.webm": 6 * MIB, "bob.webm": 6 * MIB})
    rid = backup.recording_id
    contents = {f.name: backup.content(f.name) for f in backup.files}
    settings = {"upload_ack_wait_s": ACK_WAIT_S, "upload_max_attempts": "10"}
    s3.throttle(2 * MIB)  # slow enough that the pause lands inside the first file
    first = start_uploader(
        tmp_path, nats_server.url, backup_root, "first", raw_env=s3.uploader_env(), **settings
    )
    procs.append(first)
    assert first.proc is not None
    await publish_sealed(js, backup, dest)
    await until(lambda: s3.received() >= 2 * MIB, 60, first.log_path.read_text)
    os.kill(first.proc.pid, signal.SIGSTOP)
    assert await uploads(js, rid, "uploaded") == []

    s3.throttle(None)
    second = start_uploader(
        tmp_path, nats_server.url, backup_root, "second", raw_env=s3.uploader_env(), **settings
    )
    procs.append(second)
    await wait_event(js, rid, "uploaded", second, timeout=90)
    await wait_event(js, rid, "backup_purged", second, timeout=30)
    assert not backup.folder.exists()

    # The first wakes up in the middle of its upload, on a backup that is gone.
    os.kill(first.proc.pid, signal.SIGCONT)

    def first_is_done() -> bool:
        said = messages(first, rid)
        return any("lease lost" in m or "upload failed" in m for m in said) or (
            "recording uploaded" in said
        )

    await until(first_is_done, 60, first.log_path.read_text)
    await consumer_idle(js, "TRANSCODES", "uploader-sealed")
    await asyncio.sleep(2)

    events = await uploads(js, rid)
    kinds = [type(e).__name__ for e in events]
    assert len(await uploads(js, rid, "uploaded")) == 1, kinds
    assert len(await uploads(js, rid, "backup_purged")) == 1, kinds
    assert await uploads(js, rid, "failed") == [], kinds
    assert await uploads(js, rid, "retained") == [], kinds
    # The paused one announced its attempt before the pause and nothing after it.
    first_job = {e.job_id for e in events if isinstance(e, up.UploadAttemptStarted)}
    done = await uploads(js, rid, "uploaded")
    assert isinstance(done[0], up.RecordingUploaded)
    assert len(first_job) == 2 and done[0].job_id in first_job
    said = messages(first, rid)
    assert "recording uploaded" not in said and "handler crashed" not in said, said
    assert any("lease lost" in m for m in said), said
    # One good copy of each file at the destination.
    assert s3.keys() == sorted(backup.key(name) for name in contents)
    for name, data in contents.items():
        assert s3.read(backup.key(name)) == data, name
