"""Two proxy instances share one recording: a stop reaches both, and ``capture.closed`` comes
once, after both have ended their sessions, listing every segment of every participant. An
instance that is gone is waited for only so long."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from resguardo.publisher import Publisher
from shared.embedded import NatsServer
from shared.events import captures

from .conftest import (
    Proxy,
    history,
    make_proxy,
    start_recording,
    stop_recording,
    wait_for_count,
    wait_for_event,
)


@pytest.fixture
async def proxies(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[tuple[Proxy, Proxy]]:
    pair = tuple(
        make_proxy(tmp_path / f"proxy-{i}", nats_server, proxy_close_wait_s="4") for i in (0, 1)
    )
    for proxy in pair:
        proxy.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # As behind a load balancer: resource URLs must lead back to this very instance.
        proxy.process.env["RESGUARDO_WHIP_INSTANCE_URL"] = proxy.base_url
        await proxy.start()
    try:
        yield pair  # type: ignore[misc]
    finally:
        for proxy in pair:
            proxy.process.stop()


async def test_a_stop_ends_the_sessions_on_both_and_closes_once_with_everything(
    js: JetStreamContext, proxies: tuple[Proxy, Proxy]
) -> None:
    rec = await start_recording(js)
    publishers = [
        Publisher(p.whip_url(rec.rid), rec.token, participant=name, ca_file=p.ca_file)
        for p, name in zip(proxies, ("ana", "ben"), strict=True)
    ]
    for pub in publishers:
        await pub.start()
    for pub, proxy in zip(publishers, proxies, strict=True):
        assert pub.location.startswith(proxy.base_url + f"/whip/{rec.rid}/"), pub.location
    try:
        await wait_for_count(js, rec.rid, captures.TrackStarted, 4)
        await wait_for_count(js, rec.rid, captures.SegmentWritten, 6)
        await stop_recording(js, rec)
        closed = await wait_for_event(js, f"captures.{rec.rid}.closed")
    finally:
        for pub in publishers:
            await pub.stop()
    await asyncio.sleep(2)  # anything published late would land now
    events = await history(js, rec.rid)
    assert isinstance(closed, captures.CaptureClosed)
    segments = [e for e in events if isinstance(e, captures.SegmentWritten)]
    assert closed.tracks == 4
    assert closed.segments == len(segments) == len({(s.track_id, s.seq) for s in segments})
    assert sum(isinstance(e, captures.CaptureClosed) for e in events) == 1
    assert events.index(closed) == len(events) - 1, "events after capture.closed"
    left = [e for e in events if isinstance(e, captures.ParticipantLeft)]
    assert {e.participant_id for e in left} == {"ana", "ben"}
    # Both ended by their own proxy, not on their behalf by the one that closed.
    assert {e.reason for e in left} == {"recording stopped"}, left
    ended = [e for e in events if isinstance(e, captures.TrackEnded)]
    for end in ended:
        assert end.segments == sum(1 for s in segments if s.track_id == end.track_id)


async def test_an_instance_that_is_gone_is_waited_for_a_bounded_time(
    js: JetStreamContext, proxies: tuple[Proxy, Proxy]
) -> None:
    rec = await start_recording(js)
    alive, gone = proxies
    ana = Publisher(alive.whip_url(rec.rid), rec.token, participant="ana", ca_file=alive.ca_file)
    ben = Publisher(gone.whip_url(rec.rid), rec.token, participant="ben", ca_file=gone.ca_file)
    await ana.start()
    await ben.start()
    try:
        await wait_for_count(js, rec.rid, captures.SegmentWritten, 6)
        gone.process.kill()
        await stop_recording(js, rec)
        closed = await wait_for_event(js, f"captures.{rec.rid}.closed", timeout=30)
    finally:
        await ana.stop()
        await ben.stop()
    events = await history(js, rec.rid)
    assert isinstance(closed, captures.CaptureClosed)
    assert closed.tracks == 4
    assert closed.segments == sum(isinstance(e, captures.SegmentWritten) for e in events)
    left = {e.participant_id: e.reason for e in events if isinstance(e, captures.ParticipantLeft)}
    assert left == {"ana": "recording stopped", "ben": "proxy restarted"}
