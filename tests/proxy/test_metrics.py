"""The proxy's health port: who is publishing now, the segments and bytes captured (as the
CAPTURES stream has them), and readiness that names the WHIP port and the stop consumer."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from resguardo.publisher import Publisher
from shared.events import captures
from tests import scrape
from tests.servers import wait_until

from .conftest import Proxy, history, start_recording, stop_recording, wait_for_event

KINDS = ("audio", "video")


def live(base: str, participants: int, tracks: int) -> scrape.Samples | None:
    m = scrape.scrape(base)
    if m.value("resguardo_proxy_participants") != participants:
        return None
    if any(m.value("resguardo_proxy_tracks", kind=k) != tracks for k in KINDS):
        return None
    return m


async def test_live_publishers_and_what_they_captured(js: JetStreamContext, proxy: Proxy) -> None:
    base = scrape.health_url(proxy.data_dir / "run", "proxy")

    def ready() -> dict[str, object] | None:
        status, state = scrape.readiness(base)
        return state if status == 200 else None

    state = await asyncio.to_thread(wait_until, ready, 20, 0.1, "the proxy to be ready")
    assert state["checks"] == {
        "nats": "ok",
        "started": "ok",
        "backup store": "ok",
        "whip": "ok",
        "consumer proxy-stop": "ok",
    }
    idle = await asyncio.to_thread(live, base, 0, 0)
    assert idle is not None
    assert all(idle.value("resguardo_proxy_segments_total", kind=k) == 0 for k in KINDS)

    rec = await start_recording(js)
    async with Publisher(
        proxy.whip_url(rec.rid), rec.token, participant="ana", ca_file=proxy.ca_file
    ):
        m = await asyncio.to_thread(
            wait_until, lambda: live(base, 1, 1), 20, 0.2, "one participant with two tracks"
        )
        assert m.value("resguardo_proxy_peer_connections") == 1
        await asyncio.sleep(2.5)
    await asyncio.to_thread(wait_until, lambda: live(base, 0, 0), 20, 0.2, "nobody publishing")
    await stop_recording(js, rec)
    await wait_for_event(js, f"captures.{rec.rid}.closed")
    segments = [e for e in await history(js, rec.rid) if isinstance(e, captures.SegmentWritten)]

    m = await asyncio.to_thread(scrape.scrape, base)
    for kind in KINDS:
        mine = [s for s in segments if s.kind == kind]
        assert len(mine) >= 2, (kind, mine)
        assert m.value("resguardo_proxy_segments_total", kind=kind) == len(mine)
        assert m.value("resguardo_proxy_captured_bytes_total", kind=kind) == sum(
            s.size for s in mine
        )
        assert m.value("resguardo_proxy_frames_total", kind=kind) == sum(s.frames for s in mine)
    assert m.value("resguardo_proxy_peer_connections") == 0
