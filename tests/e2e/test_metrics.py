"""One recording through `resguardo up`, then every service's /metrics (read with
prometheus-client's own parser) counts what happened, and every /readyz is 200 with each check ok.
Only the ``<data dir>/run/<service>.health`` files are relied on to find the ports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats
import pytest

from resguardo.publisher import publish
from shared import natsio
from shared.events import captures as cap
from shared.events import recordings as rec

from .. import scrape
from ..servers import wait_until
from .system import RunningSystem

SECONDS = 4.0
SERVICES = ("api", "credentials", "proxy", "transcoder", "uploader", "notifier")
PROJECTED = ("RECORDINGS", "CAPTURES", "TRANSCODES", "UPLOADS", "VAULT")
CHECKS = {
    "api": {"nats", "started", "database", "projectors", "https"},
    "credentials": {"nats", "started", "database", "rpc", "consumer vault-shred"},
    "proxy": {"nats", "started", "backup store", "whip", "consumer proxy-stop"},
    "transcoder": {"nats", "started", "backup store", "consumer transcoder"},
    "uploader": {
        "nats",
        "started",
        "backup store",
        "consumer uploader-sealed",
        "consumer uploader-resend",
        "consumer uploader-probe",
    },
    "notifier": {
        "nats",
        "started",
        "consumer notifier-recordings",
        "consumer notifier-transcodes",
        "consumer notifier-uploads",
        "consumer notifier-deliveries",
    },
}


async def segments_written(nats_url: str, rid: str) -> list[cap.SegmentWritten]:
    nc = await nats.connect(nats_url)
    try:
        stored = await natsio.read_subject(nc.jetstream(), cap.STREAM, cap.STREAM.filter(">", rid))
    finally:
        await nc.close()
    return [e for _, e in stored if isinstance(e, cap.SegmentWritten)]


def record_one(system: RunningSystem, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A file destination, one participant for a few seconds, stopped: (id, final view)."""
    config = tmp_path / "remote.json"
    config.write_text(json.dumps({"path": str(tmp_path / "remote")}))
    system.cli("destinations", "add", "local", "--provider", "file", "--config", str(config))
    started = system.cli_json("recordings", "start", "--destination", "local")
    ca = Path(system.endpoints["ca_file"])
    asyncio.run(
        publish(
            started["whip_url"], started["token"], participant="alice", seconds=SECONDS, ca_file=ca
        )
    )
    rid = started["recording_id"]
    system.cli("recordings", "stop", rid)
    final = system.wait_state(rid, {"uploaded", "retained", "failed"})
    assert final["state"] == "uploaded", final
    return rid, final


@pytest.mark.slow
def test_metrics_count_one_recording(system: RunningSystem, tmp_path: Path) -> None:
    rid, final = record_one(system, tmp_path)
    run_dir = system.data_dir / "run"
    urls = {s: scrape.health_url(run_dir, s) for s in SERVICES}
    segments = asyncio.run(segments_written(system.endpoints["nats_url"], rid))
    assert segments, "the recording wrote no segment"

    # Readiness: every service ready, every check it runs ok (and the ones it should run there).
    for service, base in urls.items():
        status, state = scrape.readiness(base)
        assert status == 200, (service, state)
        assert state["service"] == service and state["ready"] is True
        assert set(state["checks"]) == CHECKS[service], (service, state)
        assert set(state["checks"].values()) == {"ok"}, (service, state)

    m = {s: scrape.scrape(base) for s, base in urls.items()}

    # proxy: one segment counted per capture.segment_written, their bytes and frames; nobody left.
    proxy = m["proxy"]
    kinds = ("audio", "video")
    assert sum(proxy.value("resguardo_proxy_segments_total", kind=k) for k in kinds) == len(
        segments
    )
    for kind in kinds:
        mine = [s for s in segments if s.kind == kind]
        assert mine, f"no {kind} segment"
        assert proxy.value("resguardo_proxy_segments_total", kind=kind) == len(mine)
        assert proxy.value("resguardo_proxy_captured_bytes_total", kind=kind) == sum(
            s.size for s in mine
        )
        assert proxy.value("resguardo_proxy_frames_total", kind=kind) == sum(s.frames for s in mine)
        assert proxy.value("resguardo_proxy_tracks", kind=kind) == 0
    assert proxy.value("resguardo_proxy_participants") == 0
    assert proxy.types["resguardo_proxy_segments"] == "counter"

    # credentials: two grants, the destination test's (the uploader ran it when the destination
    # was added) and the one upload's.
    vault = m["credentials"]
    assert vault.value("resguardo_vault_grants_total", outcome="issued", reason="none") == 2
    grants = vault.named("resguardo_vault_grants_total")
    assert sum(grants.values()) == 2, grants
    assert vault.value("resguardo_vault_grant_seconds_count") == 2

    # transcoder: sealed once, quarantined never; alice's file, the composite and the sidecars.
    tx = m["transcoder"]
    assert tx.value("resguardo_transcoder_recordings_total", outcome="sealed") == 1
    assert tx.value("resguardo_transcoder_recordings_total", outcome="quarantined") == 0
    assert tx.value("resguardo_transcoder_transcode_seconds_count", outcome="sealed") == 1
    roles = {"participant": 1, "composite": 1, "manifest": 1, "signature": 1, "checksums": 1}
    for kind, n in roles.items():
        assert tx.value("resguardo_transcoder_outputs_total", kind=kind) == n, kind
    files = final["files"]
    assert sum(tx.named("resguardo_transcoder_output_bytes_total").values()) == sum(
        f["size"] for f in files
    )

    # uploader: one job uploaded to the file provider, every file's bytes, one purge.
    up = m["uploader"]
    assert up.value("resguardo_uploader_jobs_total", provider="file", outcome="uploaded") == 1
    jobs = up.named("resguardo_uploader_jobs_total")
    assert sum(jobs.values()) == 1, jobs
    assert up.value("resguardo_uploader_files_total", provider="file") == len(files)
    assert up.value("resguardo_uploader_bytes_total", provider="file") == sum(
        f["size"] for f in files
    )
    assert up.value("resguardo_uploader_upload_seconds_count", provider="file") == 1
    assert up.value("resguardo_uploader_purges_total") == 1
    assert sum(up.named("resguardo_uploader_failures_total").values()) == 0

    # api: the recording is counted as uploaded, nothing retained.
    api = m["api"]
    assert api.value("resguardo_recordings", state="uploaded") == 1
    others = {labels: v for labels, v in api.named("resguardo_recordings").items() if v}
    assert others == {frozenset({("state", "uploaded")}): 1}
    assert api.value("resguardo_retained_recordings") == 0
    assert api.value("resguardo_retained_bytes") == 0

    # The read model catches up with every stream (events after upload.uploaded included).
    def caught_up() -> bool:
        page = scrape.scrape(urls["api"])
        return all(
            page.value("resguardo_api_projection_lag_messages", stream=s) == 0 for s in PROJECTED
        )

    wait_until(caught_up, timeout=30, interval=0.5, message="the projection lag to reach 0")

    # Every durable consumer has its lag exported, and nothing went to the dead letters.
    assert (
        m["uploader"].value(
            "resguardo_consumer_pending_messages", stream="TRANSCODES", durable="uploader-sealed"
        )
        == 0
    )
    assert (
        m["proxy"].get(
            "resguardo_consumer_pending_messages", stream=rec.STREAM.name, durable="proxy-stop"
        )
        is not None
    )
    for service, page in m.items():
        assert sum(page.named("resguardo_dead_letters_total").values()) == 0, service
        assert page.value("resguardo_service_info", service=service) == 1
