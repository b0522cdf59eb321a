"""Stopping a recording on every proxy instance, then closing its capture once.

- Every instance follows the stop requests (an ordered consumer of new messages: a broadcast)
  and ends its own sessions of the recording; each session publishes its last segment and its
  ends.
- One instance, whichever the durable ``proxy-stop`` hands the request to, closes the capture:
  it waits until the history shows every track and session ended (on any instance), at most
  ``RESGUARDO_PROXY_CLOSE_WAIT_S``, after which what is still open belonged to an instance that
  is gone and is ended on its behalf. Then ``capture.closed``, with the totals from the CAPTURES
  history, so they are right after a crash and restart too. It is published at most once in
  effect (state check first, deterministic id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from shared import natsio
from shared.events import AnyEvent, captures, decode, recordings

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


async def follow_stops(js: JetStreamContext, sessions: Sessions) -> None:
    """Every instance: end this instance's sessions of each recording stopped from now on."""

    async def on_stop(msg: Msg) -> None:
        try:
            event = decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return  # the durable consumer dead-letters it
        if isinstance(event, recordings.RecordingStopRequested):
            await sessions.end_recording(event.recording_id, "recording stopped")

    sub = await js.subscribe(
        recordings.STREAM.filter("stop_requested"),
        cb=on_stop,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.NEW,
    )
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), 1.0)


def stop_handler(
    js: JetStreamContext, sessions: Sessions, publish: Publish, close_wait_s: float = 15.0
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
        deadline = time.monotonic() + close_wait_s
        while facts.still_open(state) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)  # other instances ending their sessions
            state = await capture_state(js, rid)
        if facts.still_open(state):
            log.warning(
                "sessions still open after the wait; ending them on their behalf",
                extra={"recording_id": rid, "open": facts.still_open(state)},
            )
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
