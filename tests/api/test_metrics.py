"""The API's health port: recordings by state and what retained recordings hold, read from the
read model before each scrape; readiness names the database, the projectors and the HTTPS port."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from shared.events import captures, event_id, now
from shared.ids import new_tenant_id
from tests import scrape

from . import factories as f
from .support import ApiProcess, publish_all, wait_offset


def segment(
    rid: str, tenant: str, track: str, seq: int, size: int, again: str = ""
) -> captures.SegmentWritten:
    return captures.SegmentWritten(
        event_id=event_id(rid, "segment", track, seq, again),  # again: a re-published copy
        recording_id=rid,
        tenant_id=tenant,
        occurred_at=now(),
        participant_id="alice",
        track_id=track,
        kind="audio",
        seq=seq,
        path=f"capture/alice/{track}/{seq:06d}.rgc",
        sha256="ef" * 32,
        size=size,
        frames=50,
        first_rtp_ts=0,
        last_rtp_ts=960,
        first_wallclock_ns=1,
        last_wallclock_ns=2,
    )


async def test_recordings_by_state_and_retained_backups(
    api: ApiProcess, js: JetStreamContext, database_url: str
) -> None:
    base = scrape.health_url(api.data_dir / "run", "api")
    tenant = new_tenant_id()
    kept, sent, live = (f.started(tenant) for _ in range(3))
    a, b, c = kept.recording_id, sent.recording_id, live.recording_id
    await publish_all(js, [kept, sent, live])
    last = {
        "CAPTURES": await publish_all(
            js,
            [
                segment(a, tenant, "alice-1-audio", 0, 1000),
                segment(a, tenant, "alice-1-audio", 1, 500),
                # The same segment published again after the dedup window: counted once.
                segment(a, tenant, "alice-1-audio", 1, 500, again="salvaged"),
                segment(b, tenant, "alice-1-audio", 0, 7000),
                f.closed(a, tenant),
                f.closed(b, tenant),
            ],
        ),
        "TRANSCODES": await publish_all(js, [f.sealed(a, tenant), f.sealed(b, tenant)]),
        "UPLOADS": await publish_all(
            js, [f.attempt(a, tenant), f.retained(a, tenant), f.attempt(b, tenant, "job2")]
        ),
    }
    last["UPLOADS"] = await publish_all(js, [f.uploaded(b, tenant, "job2")])
    for stream, seq in last.items():
        await wait_offset(database_url, stream, seq)

    m = await asyncio.to_thread(scrape.scrape, base)
    assert m.types["resguardo_recordings"] == "gauge"
    by_state = {dict(labels)["state"]: v for labels, v in m.named("resguardo_recordings").items()}
    assert by_state == {
        "capturing": 1,
        "transcoding": 0,
        "uploading": 0,
        "uploaded": 1,
        "retained": 1,
        "failed": 0,
    }, (a, b, c)
    assert m.value("resguardo_retained_recordings") == 1
    # a's two distinct segments and its sealed files (alice.webm 1234 + SHA256SUMS 80).
    assert m.value("resguardo_retained_bytes") == 1000 + 500 + f.MEDIA.size + f.SUMS.size
    for stream in ("RECORDINGS", "CAPTURES", "TRANSCODES", "UPLOADS", "VAULT"):
        assert m.value("resguardo_api_projection_lag_messages", stream=stream) == 0, stream

    status, state = await asyncio.to_thread(scrape.readiness, base)
    assert status == 200, state
    assert state["checks"] == {
        "nats": "ok",
        "started": "ok",
        "database": "ok",
        "projectors": "ok",
        "https": "ok",
    }
