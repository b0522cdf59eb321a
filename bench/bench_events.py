"""Publishing an event (msgspec encode + Nats-Msg-Id + JetStream ack) against a raw JetStream
publish of the same bytes, on the same embedded nats-server (sync_interval: always)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


async def run() -> list[dict[str, object]]:
    from shared import natsio
    from shared.embedded import NatsServer
    from shared.events import encode, event_id, now
    from shared.events.captures import SegmentWritten

    n = 2000
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            nc = await natsio.connect(server.url, name="bench")
            js = nc.jetstream()
            await natsio.ensure_streams(js)

            def event(i: int, rid: str) -> SegmentWritten:
                return SegmentWritten(
                    event_id=event_id(rid, "seg", i),
                    recording_id=rid,
                    tenant_id="ten_0123456789abcdef",
                    occurred_at=now(),
                    participant_id="alice",
                    track_id="alice-0000-video",
                    kind="video",
                    seq=i,
                    path="capture/x.rgc",
                    sha256="ab" * 32,
                    size=1 << 20,
                    frames=150,
                    first_rtp_ts=0,
                    last_rtp_ts=1,
                    first_wallclock_ns=0,
                    last_wallclock_ns=1,
                )

            raw = encode(event(0, "rec_" + "0" * 24))
            t0 = time.perf_counter()
            for _ in range(n):
                await js.publish(f"captures.rec_{'1' * 24}.segment_written", raw)
            base = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(n):
                await natsio.publish(js, event(i, "rec_" + "2" * 24))
            mine = time.perf_counter() - t0
            await nc.close()
        finally:
            server.stop()
    return [
        {
            "name": "event publish (sequential, acked, fsync always)",
            "ours": f"{n / mine:,.0f}/s",
            "baseline": f"{n / base:,.0f}/s (raw js.publish)",
            "ratio": mine / base,
            "goal": "<= 1.2x",
        }
    ]
