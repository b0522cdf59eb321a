"""Follow every stream and fold it into the read model, resuming from the offsets in the DB.

One task per stream. Each uses an ephemeral, ack-less pull consumer starting just after the last
applied sequence; a gap in the consumer sequence (a message lost on a reconnect), a vanished
consumer (server restart) or any NATS error makes it start over from the DB offset, so nothing is
skipped and nothing is applied twice (``db.apply_event`` skips ``seq <= last_seq``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from shared.events import captures, decode, recordings, transcodes, uploads, vault, webhooks
from shared.events.base import StreamSpec

from . import db

log = logging.getLogger(__name__)

PROJECTED: tuple[StreamSpec, ...] = (
    recordings.STREAM,
    captures.STREAM,
    transcodes.STREAM,
    uploads.STREAM,
    vault.STREAM,
    webhooks.STREAM,  # into api.webhook_deliveries, not into recordings
)

FETCH_BATCH = 256
IDLE_CHECK_EVERY = 5  # empty fetches (1 s each) between checks that our consumer still exists


class _StartOver(Exception):
    pass


async def _follow_once(js: JetStreamContext, pool: asyncpg.Pool, stream: StreamSpec) -> None:
    start = await db.offset(pool, stream.name) + 1
    subject = f"{stream.prefix}.>"
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        filter_subject=subject,
        inactive_threshold=60.0,
        mem_storage=True,
        num_replicas=1,
        max_deliver=1,
    )
    info = await js.stream_info(stream.name)
    if info.state.last_seq + 1 < start:
        log.error(
            "the read model is ahead of the stream: was the NATS store replaced? "
            "new events are projected only past the stored offset",
            extra={"stream": stream.name, "offset": start - 1, "last_seq": info.state.last_seq},
        )
    sub = await js.pull_subscribe(subject, stream=stream.name, config=config)
    consumer = (await sub.consumer_info()).name
    expected = 1  # consumer sequence of the next message
    idle = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(batch=FETCH_BATCH, timeout=1.0)
            except TimeoutError:  # nats.errors.TimeoutError, or the bare one fetch() may raise
                idle += 1
                if idle % IDLE_CHECK_EVERY == 0:
                    await sub.consumer_info()  # NotFoundError if the server lost it
                continue
            idle = 0
            for msg in msgs:
                meta = msg.metadata
                if meta.sequence.consumer != expected:
                    raise _StartOver(f"consumer sequence {meta.sequence.consumer} != {expected}")
                expected += 1
                await _apply(pool, stream, meta.sequence.stream, msg.subject, msg.data)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream.name, consumer)


async def _apply(
    pool: asyncpg.Pool, stream: StreamSpec, seq: int, subject: str, data: bytes
) -> None:
    try:
        event = decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        # The consumers that own this subject dead-letter it; the read model just moves on.
        log.warning(
            "skipping undecodable event",
            extra={"stream": stream.name, "seq": seq, "subject": subject},
        )
        await db.apply_event(pool, stream.name, seq, None)
        return
    # A destination test's events name a probe id, and the vault's webhook events an endpoint
    # id, not a recording: no recording row for them.
    skip = _is_probe(event) or _is_webhook_audit(event)
    await db.apply_event(pool, stream.name, seq, None if skip else event)


def _is_webhook_audit(event: object) -> bool:
    return isinstance(event, vault.WEBHOOK_EVENTS)


def _is_probe(event: object) -> bool:
    if isinstance(event, vault.GrantIssued | vault.GrantRefused):
        return event.probe
    return isinstance(event, vault.ProbeRequested | uploads.ProbeFinished)


async def follow(js: JetStreamContext, pool: asyncpg.Pool, stream: StreamSpec) -> None:
    """Project ``stream`` forever (cancel to stop)."""
    delay = 0.2
    while True:
        before = await _offset_or_none(pool, stream)
        try:
            await _follow_once(js, pool, stream)
        except asyncio.CancelledError:
            raise
        except (
            _StartOver,
            nats.errors.Error,
            nats.js.errors.Error,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            TimeoutError,
        ) as exc:
            log.warning(
                "projection restarting from the stored offset",
                extra={"stream": stream.name, "reason": f"{type(exc).__name__}: {exc}"[:300]},
                exc_info=True,
            )
            progressed = before != await _offset_or_none(pool, stream)
            delay = 0.2 if progressed else min(delay * 2, 5.0)
            await asyncio.sleep(delay)


async def _offset_or_none(pool: asyncpg.Pool, stream: StreamSpec) -> int | None:
    try:
        return await db.offset(pool, stream.name)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        return None
