"""One contract, every backend's real server: S3 (moto), GCS (gcp-storage-emulator), Azure Blob
(Azurite), FTP and FTPS (pyftpdlib, explicit TLS, with a HASH command).

Each backend: upload, confirm, purge; transient failure then success; permanent failure, retained,
then re-send; kill -9 mid-upload, then resume from what already arrived; the adapter's own delete
(gone afterwards, a second delete is fine). The uploader is a real
process, with a real vault, NATS and PostgreSQL; a proxy sits between it and the storage server.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from services.uploader.backend import Backend, build
from services.uploader.resume import detached
from shared.embedded import NatsServer
from shared.events import uploads as up
from shared.events.transcodes import SealedFile
from shared.ids import new_tenant_id
from shared.providers import split_config
from shared.vault_rpc import Grant
from tests.credentials.helpers import VaultClient
from tests.servers import ServiceProcess

from .storage import MIB, FTPStore, Store, make_store
from .support import (
    encrypted_backup,
    publish_resend,
    publish_sealed,
    sealed_file,
    start_uploader,
    uploads,
    wait_event,
)
from .test_uploader import make_destination

KINDS = ("s3", "gcs", "azure", "ftp", "ftps")
Starter = Callable[..., ServiceProcess]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def run_uploader(
    tmp_path: Path, nats_server: NatsServer, backup_root: Path, store: Store
) -> Iterator[Starter]:
    procs: list[ServiceProcess] = []

    def start(name: str = "uploader", **extra: str) -> ServiceProcess:
        proc = start_uploader(
            tmp_path, nats_server.url, backup_root, name, raw_env=store.uploader_env(), **extra
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def assert_no_secrets(store: Store, proc: ServiceProcess, events: Sequence[object]) -> None:
    log = proc.log_path.read_text()
    raw = "".join(repr(e) for e in events)
    for secret in store.secrets():
        assert secret not in log and secret not in raw


async def test_upload_confirm_purge(
    js: JetStreamContext,
    vault: VaultClient,
    store: Store,
    run_uploader: Starter,
    backup_root: Path,
) -> None:
    store.prepare()
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, store.provider, store.config(prefix="calls"))
    # One file bigger than a part, one small, plus SHA256SUMS and manifest.json.
    backup = await encrypted_backup(
        js, backup_root, tenant, {"alice.webm": 6 * MIB + 123, "bob.webm": 2048}, dest
    )
    expected = {f.name: backup.content(f.name) for f in backup.files}
    proc = run_uploader()
    await publish_sealed(js, backup, dest)

    done = await wait_event(js, backup.recording_id, "uploaded", proc)
    assert isinstance(done, up.RecordingUploaded)
    assert store.keys() == sorted(backup.key(n, prefix="calls") for n in expected)
    assert sorted(f.name for f in done.files) == sorted(expected)
    for f in done.files:
        key = backup.key(f.name, prefix="calls")
        body = store.read(key)
        assert body == expected[f.name]
        assert f.sha256 == hashlib.sha256(body).hexdigest() and f.size == len(body)
        assert f.uri.startswith(f"{store.uri_scheme}://") and f.uri.endswith("/" + key)
        assert f.checksum_algorithm == store.checksum_algorithm and f.checksum
        if store.provider in ("s3", "gcs", "azure"):
            assert store.metadata_sha256(key) == f.sha256

    if isinstance(store, FTPStore):  # proof by the server's HASH where offered, else readback
        assert (store.counter.hashes >= len(expected)) == store.hash_cmd
    purged = await wait_event(js, backup.recording_id, "backup_purged", proc)
    assert isinstance(purged, up.BackupPurged)
    assert purged.files == len(expected) + 1  # the outputs and the capture segment
    assert not backup.folder.exists()
    events = await uploads(js, backup.recording_id)
    assert not any(isinstance(e, up.UploadFailed | up.RecordingRetained) for e in events)
    assert_no_secrets(store, proc, events)


async def test_transient_failure_then_success(
    js: JetStreamContext,
    vault: VaultClient,
    store: Store,
    run_uploader: Starter,
    backup_root: Path,
) -> None:
    store.prepare()
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, store.provider, store.config())
    backup = await encrypted_backup(js, backup_root, tenant, {"alice.webm": 3 * MIB}, dest)
    content = backup.content("alice.webm")
    store.proxy.set_down(True)  # every connection to the store is reset
    proc = run_uploader(upload_max_attempts="30", upload_backoff_s="0.3")
    await publish_sealed(js, backup, dest)

    failed = await wait_event(js, backup.recording_id, "failed", proc, where=lambda e: e.will_retry)
    assert isinstance(failed, up.UploadFailed) and failed.transient
    assert await uploads(js, backup.recording_id, "uploaded") == []
    assert backup.folder.exists()

    store.proxy.set_down(False)
    done = await wait_event(js, backup.recording_id, "uploaded", proc, timeout=120)
    assert isinstance(done, up.RecordingUploaded)
    assert store.read(backup.key("alice.webm")) == content
    attempts = await uploads(js, backup.recording_id, "attempt_started")
    assert len(attempts) >= 2
    assert await uploads(js, backup.recording_id, "retained") == []
    await wait_event(js, backup.recording_id, "backup_purged", proc)
    assert_no_secrets(store, proc, await uploads(js, backup.recording_id))


async def test_permanent_failure_retained_then_resent(
    js: JetStreamContext,
    vault: VaultClient,
    store: Store,
    run_uploader: Starter,
    backup_root: Path,
) -> None:
    # Not prepared: no bucket / container, or an FTP account that may only read.
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, store.provider, store.config())
    backup = await encrypted_backup(js, backup_root, tenant, {"alice.webm": 6 * MIB}, dest)
    expected = {f.name: backup.content(f.name) for f in backup.files}
    proc = run_uploader()
    await publish_sealed(js, backup, dest)

    kept = await wait_event(js, backup.recording_id, "retained", proc)
    assert isinstance(kept, up.RecordingRetained) and "backup is kept" in kept.reason
    failed = await uploads(js, backup.recording_id, "failed")
    assert len(failed) == 1 and isinstance(failed[0], up.UploadFailed)
    assert not failed[0].transient and not failed[0].will_retry
    assert backup.folder.exists()
    assert await uploads(js, backup.recording_id, "uploaded") == []

    store.prepare()  # the operator fixes the destination, then asks for a re-send
    await publish_resend(js, backup, dest, "fixed1")
    done = await wait_event(js, backup.recording_id, "uploaded", proc)
    assert isinstance(done, up.RecordingUploaded) and ":resend-fixed1:" in done.job_id
    assert store.keys() == sorted(backup.key(n) for n in expected)
    for name, body in expected.items():
        assert store.read(backup.key(name)) == body
    await wait_event(js, backup.recording_id, "backup_purged", proc)
    assert not backup.folder.exists()
    assert_no_secrets(store, proc, await uploads(js, backup.recording_id))


async def test_kill_9_mid_upload_resumes_from_what_arrived(
    js: JetStreamContext,
    vault: VaultClient,
    store: Store,
    run_uploader: Starter,
    backup_root: Path,
) -> None:
    store.prepare()
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, store.provider, store.config())
    size = 40 * MIB
    backup = await encrypted_backup(
        js, backup_root, tenant, {"big.webm": size, "small.webm": 1000}, dest
    )
    expected = {f.name: backup.content(f.name) for f in backup.files}
    store.throttle(8 * MIB)  # slow enough to be caught mid-file

    first = run_uploader("up1", upload_ack_wait_s="4")
    await publish_sealed(js, backup, dest)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while store.received() < 16 * MIB:
        assert first.alive(), first.log_path.read_text()[-3000:]
        assert loop.time() < deadline, "the upload never got 16 MiB in"
        await asyncio.sleep(0.02)
    first.kill()
    assert await uploads(js, backup.recording_id, "uploaded") == []
    assert backup.key("big.webm") not in store.keys()
    assert (backup.folder / "upload-state.json").exists()  # what the next attempt resumes

    store.throttle(None)
    before = store.received()
    second = run_uploader("up2", upload_ack_wait_s="4")
    await wait_event(js, backup.recording_id, "uploaded", second, timeout=120)
    await wait_event(js, backup.recording_id, "backup_purged", second)
    sent_again = store.received() - before
    # At least one 5 MiB part / chunk / block (FTP: every byte the file held) was not sent again.
    assert sent_again < size - 5 * MIB, f"{sent_again} bytes sent after the restart"
    # Exactly one intact copy, nothing half-sent left under another name.
    assert store.keys() == sorted(backup.key(n) for n in expected)
    for name, body in expected.items():
        assert hashlib.sha256(store.read(backup.key(name))).digest() == (
            hashlib.sha256(body).digest()
        )
    assert len(await uploads(js, backup.recording_id, "uploaded")) == 1
    assert not backup.folder.exists()


def direct_backend(store: Store, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """The store's adapter, built in this process as the uploader builds it for one job."""
    for name, value in store.uploader_env().items():  # FTPS: trust the test server's certificate
        monkeypatch.setenv(name, value)
    store.prepare()
    public, secret = split_config(store.provider, store.config())
    return build(Grant(provider=store.provider, config=public, secret=secret), part_size=5 * MIB)


def local_file(tmp_path: Path, name: str, data: bytes) -> tuple[Path, SealedFile]:
    local = tmp_path / name
    local.write_bytes(data)
    return local, sealed_file(local, "media")


async def test_delete_removes_the_object_and_a_second_delete_is_fine(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = direct_backend(store, monkeypatch)
    data = b"delete me " * 1000
    local, sealed = local_file(tmp_path, "gone.bin", data)
    key, kept = "calls/t1/2026-01-02/rec1/gone.bin", "calls/t1/2026-01-02/rec1/kept.bin"
    try:
        for k in (key, kept):
            await backend.upload(local, k, sealed, detached(sealed))
        assert store.keys() == sorted([key, kept])
        await backend.delete(key)
        assert store.keys() == [kept]  # gone, and nothing else touched
        await backend.delete(key)  # not there any more: not an error
        await backend.delete("calls/never/written.bin")
        assert store.keys() == [kept]
        assert store.read(kept) == data
    finally:
        await backend.close()


@pytest.mark.parametrize("kind", ("ftp", "ftps"))
async def test_ftp_folder_made_by_another_upload_meanwhile_is_no_failure(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two recordings of one tenant and day share their folders: the other upload may make one
    between this one's look and its MKD (refused with 550), at any level of the path."""
    store = make_store(kind, tmp_path)
    assert isinstance(store, FTPStore)
    try:
        backend = direct_backend(store, monkeypatch)
        data = b"first of the day " * 100
        local, sealed = local_file(tmp_path, "a.bin", data)
        store.counter.mkdir_races = 2  # /inbox/t1 and then /inbox/t1/2026-01-02
        try:
            await backend.upload(local, "t1/2026-01-02/rec1/a.bin", sealed, detached(sealed))
        finally:
            await backend.close()
        assert store.counter.mkdir_races == 0
        assert store.keys() == ["t1/2026-01-02/rec1/a.bin"]
        assert store.read("t1/2026-01-02/rec1/a.bin") == data
    finally:
        store.close()
