"""Consumer ``proxy-stop``: end a stopped recording's sessions, then publish ``capture.closed``.

The totals come from the CAPTURES history (read after this process's own events are stored), so
they are right after a crash and restart too; ``capture.closed`` is published at most once in
effect (state check first, deterministic id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import natsio
from shared.events import AnyEvent, captures, recordings

from . import facts
from .session import Publish, Sessions

log = logging.getLogger(__name__)

STOP_CONSUMER = natsio.ConsumerSpec(
    stream=recordings.STREAM,
    durable="proxy-stop",
    filter_subjects=(recordings.STREAM.filter("stop_requested"),),
)


async def capture_state(js: JetStreamContext, recording_id: str) -> facts.CaptureState:
    history = await natsio.read_subject(js, captures.STREAM, f"captures.{recording_id}.>")
    return facts.fold(event for _, event in history)


def stop_handler(
    js: JetStreamContext, sessions: Sessions, publish: Publish
) -> Callable[[AnyEvent, Msg], Awaitable[None]]:
    async def handle(event: AnyEvent, msg: Msg) -> None:
        if not isinstance(event, recordings.RecordingStopRequested):
            return
        rid = event.recording_id
        if await natsio.last_event(js, captures.STREAM, f"captures.{rid}.closed") is not None:
            sessions.stopped.add(rid)
            return
        await sessions.end_recording(rid, "recording stopped")
        state = await capture_state(js, rid)
        for out in facts.decide_close(
            state, recording_id=rid, tenant_id=event.tenant_id, now_ns=time.time_ns()
        ):
            await publish(out)
        log.info(
            "capture closed",
            extra={
                "recording_id": rid,
                "segments": len(state.segments),
                "tracks": len(state.tracks),
            },
        )

    return handle
