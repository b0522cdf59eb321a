"""`resguardo status` against a running system: what it reports moves with what happens, and
its exit status says whether anything is unhealthy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import nats
import pytest

from shared.events import STREAMS

from ..servers import wait_until
from .system import RunningSystem, start_system, stop_system

pytestmark = pytest.mark.slow


def status(system: RunningSystem) -> tuple[int, dict[str, Any]]:
    result = system.cli("status", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


async def publish_junk(nats_url: str) -> None:
    """Bytes that are no event, on a subject the transcoder consumes: a dead letter to come."""
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish("captures.rec_junk.closed", b"{not an event")
    finally:
        await nc.close()


def test_status_reports_every_part_and_fails_when_one_is_unhealthy(tmp_path: Path) -> None:
    system = start_system(tmp_path)
    try:
        # `up` answers once the API does; the other services may still be starting.
        wait_until(lambda: status(system)[0] == 0, timeout=60, message="every part healthy")
        code, report = status(system)
        assert code == 0, report["problems"]
        assert report["healthy"] and report["problems"] == []
        services = report["services"]
        assert set(services) == {
            "credentials",
            "api",
            "proxy",
            "transcoder",
            "uploader",
            "notifier",
        }
        for name, service in services.items():
            assert service["state"] == "up" and service["ready"], name
            assert service["pid"] == system.pid(name)
            assert service["restarts"] == 0 and service["uptime_s"] >= 0
            assert service["checks"]["nats"] == "ok"
        assert services["transcoder"]["checks"]["consumer transcoder"] == "ok"
        streams = {s["name"] for s in report["nats"]["streams"]}
        assert streams == {s.name for s in STREAMS} | {"KV_LEASES"}  # leases: shared.leases
        durables = {c["name"]: c for c in report["nats"]["consumers"]}
        assert {"transcoder", "proxy-stop", "uploader-sealed", "uploader-resend"} <= set(durables)
        assert report["dead_letters"] == 0
        assert report["postgres"]["reachable"] is True

        # A dead letter, a backup on disk, a restart: each shows.
        asyncio.run(publish_junk(system.endpoints["nats_url"]))
        tenant = system.data_dir / "backup" / "ten_statustest0000" / "rec_x"
        tenant.mkdir(parents=True)
        (tenant / "blob").write_bytes(b"x" * 1000)
        old = system.kill9("uploader")
        wait_until(lambda: status(system)[1]["dead_letters"] == 1, timeout=30)
        wait_until(
            lambda: status(system)[1]["services"]["uploader"]["restarts"] == 1,
            timeout=30,
            message="the uploader restarted",
        )
        code, report = status(system)
        assert report["backup"]["tenants"]["ten_statustest0000"] == {
            "bytes": 1000,
            "files": 1,
            "recordings": 1,
        }
        uploader = report["services"]["uploader"]
        assert uploader["restarts"] == 1 and uploader["pid"] != old

        # A service that stops answering makes the whole report unhealthy, named.
        transcoder = system.pid("transcoder")
        os.kill(transcoder, signal.SIGSTOP)
        try:
            code, report = status(system)
            assert code == 1
            assert report["services"]["transcoder"]["ready"] is False
            assert any(p.startswith("transcoder is not ready") for p in report["problems"])
            text = system.cli("status", check=False)
            assert text.returncode == 1 and "UNHEALTHY" in text.stdout
        finally:
            os.kill(transcoder, signal.SIGCONT)
        wait_until(lambda: status(system)[0] == 0, timeout=30, message="healthy again")
    finally:
        stop_system(system)
    code, report = status(system)
    assert code == 1
    assert report["problems"][0].startswith("`resguardo up` is not running")
