"""``shared.health`` on a real port with a real nats-server: /healthz, /readyz (its checks, the
durable consumers' binding, NATS itself) and /metrics as Prometheus's own parser reads it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import REGISTRY, Gauge

from shared import health, natsio
from shared.embedded import NatsServer
from shared.events import AnyEvent, event_id, now
from shared.events import recordings as rec
from shared.ids import new_recording_id, new_tenant_id

from . import scrape

REFRESHED = Gauge("resguardo_test_refreshed", "Set by a before_scrape hook in tests/test_health.")


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    conn = await natsio.connect(nats_server.url, name="test-health")
    await natsio.ensure_streams(conn.jetstream())
    yield conn
    await conn.close()


@pytest.fixture
async def served(nc: NATS, tmp_path: Path) -> AsyncIterator[tuple[health.Health, str]]:
    checks = health.Health("testsvc")
    checks.attach(nc, nc.jetstream())
    cleanup = await health.serve(checks, "127.0.0.1", 0, tmp_path / "run")
    try:
        yield checks, scrape.health_url(tmp_path / "run", "testsvc")
    finally:
        await cleanup()
    assert not (tmp_path / "run" / "testsvc.health").exists()


async def ready(base: str) -> tuple[int, dict[str, object]]:
    return await asyncio.to_thread(scrape.readiness, base)


def stop_requested(rid: str) -> rec.RecordingStopRequested:
    return rec.RecordingStopRequested(
        event_id=event_id(rid, "stop"),
        recording_id=rid,
        tenant_id=new_tenant_id(),
        occurred_at=now(),
    )


async def test_alive_and_ready_with_only_nats(served: tuple[health.Health, str]) -> None:
    _checks, base = served
    assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
    status, body = await asyncio.to_thread(scrape.get, base + "/healthz")
    assert status == 200
    alive = json.loads(body)
    assert alive["service"] == "testsvc" and alive["alive"] is True and alive["pid"] > 0
    status, state = await ready(base)
    assert status == 200, state
    assert state == {"service": "testsvc", "ready": True, "checks": {"nats": "ok"}}


async def test_a_failing_or_hanging_check_makes_it_unready_and_is_named(
    served: tuple[health.Health, str],
) -> None:
    checks, base = served

    async def fine() -> str | None:
        return None

    async def broken() -> str | None:
        return "the widget is unplugged"

    async def crashing() -> str | None:
        raise RuntimeError("boom")

    async def hanging() -> str | None:
        await asyncio.sleep(60)
        return None

    checks.add_check("fine", fine)
    checks.add_check("widget", broken)
    status, state = await ready(base)
    assert status == 503 and state["ready"] is False
    assert state["checks"] == {"nats": "ok", "fine": "ok", "widget": "the widget is unplugged"}

    checks.add_check("widget", fine)  # fixed: the same name replaces the check
    checks.add_check("crashing", crashing)
    checks.add_check("hanging", hanging)
    status, state = await ready(base)
    assert status == 503
    named = state["checks"]
    assert isinstance(named, dict)
    assert named["widget"] == "ok"
    assert named["crashing"] == "RuntimeError: boom"
    assert named["hanging"].startswith("no answer within")


async def test_readiness_follows_nats_and_consumer_binding(
    nc: NATS, served: tuple[health.Health, str]
) -> None:
    checks, base = served
    js = nc.jetstream()
    spec = natsio.ConsumerSpec(
        stream=rec.STREAM,
        durable="test-health-stops",
        filter_subjects=(rec.STREAM.filter("stop_requested"),),
    )
    hold = asyncio.Event()
    seen: list[str] = []

    async def handler(event: AnyEvent, _msg: Msg) -> None:
        seen.append(event.recording_id)
        if len(seen) == 1:
            raise natsio.Reject("the first one is refused")
        await hold.wait()  # the others stay unacknowledged: work in flight

    dead = {"stream": rec.STREAM.name, "consumer": spec.durable}
    dead_before = REGISTRY.get_sample_value("resguardo_dead_letters_total", dead) or 0
    rids = [new_recording_id() for _ in range(3)]
    for rid in rids:
        await natsio.publish(js, stop_requested(rid))
    task = asyncio.create_task(
        natsio.run_consumer(js, spec, handler, concurrency=3, watcher=checks)
    )
    try:
        for _ in range(100):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.05)
        assert sorted(seen) == sorted(rids)
        status, state = await ready(base)
        assert status == 200, state
        assert state["checks"] == {"nats": "ok", "consumer test-health-stops": "ok"}

        samples = await asyncio.to_thread(scrape.scrape, base)
        labels = {"stream": rec.STREAM.name, "durable": spec.durable}
        assert samples.value("resguardo_consumer_ack_pending_messages", **labels) == 2
        assert samples.value("resguardo_consumer_pending_messages", **labels) == 0
        assert samples.value("resguardo_dead_letters_total", **dead) == dead_before + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    status, state = await ready(base)
    assert status == 503
    assert state["checks"] == {
        "nats": "ok",
        "consumer test-health-stops": f"consumer test-health-stops on {rec.STREAM.name} "
        "is not bound",
    }

    await nc.close()
    status, state = await ready(base)
    assert status == 503
    named = state["checks"]
    assert isinstance(named, dict) and named["nats"] == "not connected to NATS"


async def test_metrics_run_the_refreshers_and_survive_a_failing_one(
    served: tuple[health.Health, str],
) -> None:
    checks, base = served
    calls = 0

    async def count() -> None:
        nonlocal calls
        calls += 1
        REFRESHED.set(calls * 10)

    async def failing() -> None:
        raise ConnectionError("the database is away")

    checks.before_scrape(failing)
    checks.before_scrape(count)
    status, body = await asyncio.to_thread(scrape.get, base + "/metrics")
    assert status == 200
    samples = scrape.parse(body.decode())
    assert samples.value("resguardo_test_refreshed") == 10
    assert samples.types["resguardo_test_refreshed"] == "gauge"
    assert samples.types["resguardo_dead_letters"] == "counter"
    samples = await asyncio.to_thread(scrape.scrape, base)
    assert samples.value("resguardo_test_refreshed") == 20


async def test_a_taken_port_is_one_sentence(
    served: tuple[health.Health, str], tmp_path: Path
) -> None:
    _checks, base = served
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(health.PortUnavailable, match="RESGUARDO_HEALTH_PORT"):
        await health.serve(health.Health("other"), "127.0.0.1", port, tmp_path / "run")
    assert not (tmp_path / "run" / "other.health").exists()
