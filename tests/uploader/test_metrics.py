"""The uploader's health port: a confirmed upload and a retained one, as its metrics count them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.js import JetStreamContext

from shared.ids import new_tenant_id
from tests import scrape
from tests.credentials.helpers import VaultClient
from tests.servers import MotoS3, ServiceProcess, wait_until

from .support import new_bucket, publish_sealed, s3_destination, wait_event, write_backup
from .test_uploader import make_destination


def uploader_url(tmp_path: Path) -> str:
    return scrape.health_url(tmp_path / "uploader-data" / "run", "uploader")


async def scrape_when(base: str, name: str, value: float, **labels: str) -> scrape.Samples:
    """The page once ``name{labels}`` reached ``value`` (a counter moves just after its event)."""

    def reached() -> scrape.Samples | None:
        samples = scrape.scrape(base)
        return samples if samples.get(name, **labels) == value else None

    found: scrape.Samples = await asyncio.to_thread(
        wait_until, reached, 30, 0.2, f"{name}{labels} to reach {value}"
    )
    return found


async def test_a_confirmed_upload_is_counted(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    base = uploader_url(tmp_path)
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "file", {"path": str(tmp_path / "remote")})
    backup = write_backup(backup_root, tenant, {"alice.webm": 300_000, "bob.webm": 1234})
    await publish_sealed(js, backup, dest)
    await wait_event(js, backup.recording_id, "backup_purged", uploader)

    m = await scrape_when(base, "resguardo_uploader_purges_total", 1)
    assert m.value("resguardo_uploader_jobs_total", provider="file", outcome="uploaded") == 1
    for outcome in ("retry", "retained", "failed"):
        assert m.value("resguardo_uploader_jobs_total", provider="file", outcome=outcome) == 0
    assert m.value("resguardo_uploader_files_total", provider="file") == len(backup.files)
    sent = sum(f.size for f in backup.files)
    assert m.value("resguardo_uploader_bytes_total", provider="file") == sent
    assert m.value("resguardo_uploader_bytes_total", provider="s3") == 0
    assert m.value("resguardo_uploader_upload_seconds_count", provider="file") == 1
    # Purged: the outputs and the capture segment (1000 bytes) write_backup left.
    assert m.value("resguardo_uploader_purged_bytes_total") == sent + 1000
    assert sum(m.named("resguardo_uploader_failures_total").values()) == 0

    status, state = await asyncio.to_thread(scrape.readiness, base)
    assert status == 200, state
    assert state["checks"] == {
        "nats": "ok",
        "started": "ok",
        "consumer uploader-sealed": "ok",
        "consumer uploader-resend": "ok",
        "consumer uploader-probe": "ok",
        "backup store": "ok",
    }


async def test_a_retained_upload_is_counted_as_a_permanent_failure(
    js: JetStreamContext,
    vault: VaultClient,
    uploader: ServiceProcess,
    s3_server: MotoS3,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    base = uploader_url(tmp_path)
    tenant = new_tenant_id()
    dest = await make_destination(vault, tenant, "s3", s3_destination(s3_server.url, new_bucket()))
    backup = write_backup(backup_root, tenant, {"alice.webm": 4096})
    await publish_sealed(js, backup, dest)
    await wait_event(js, backup.recording_id, "retained", uploader)

    labels = {"provider": "s3", "outcome": "retained"}
    m = await scrape_when(base, "resguardo_uploader_jobs_total", 1, **labels)
    assert m.value("resguardo_uploader_failures_total", provider="s3", kind="permanent") == 1
    assert m.value("resguardo_uploader_failures_total", provider="s3", kind="transient") == 0
    assert m.value("resguardo_uploader_jobs_total", provider="s3", outcome="uploaded") == 0
    assert not m.get("resguardo_uploader_upload_seconds_count", provider="s3")
    assert m.value("resguardo_uploader_purges_total") == 0
    assert backup.folder.exists()
