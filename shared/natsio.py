"""NATS and JetStream plumbing shared by every service: streams, publishing, durable consumers.

The rules it enforces:
- streams are declared idempotently by their owner, with the subjects from ``shared.events``;
- every publish carries ``Nats-Msg-Id`` = the event's deterministic id, so retries are no-ops;
- a consumer acks only after its handler has finished; undecodable messages go to DEADLETTER
  with the reason and the consumer goes on; a handler says retry later (nak with delay) or give
  up (dead-letter + term) by raising one of the two exceptions below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from . import metrics
from .events import STREAMS, AnyEvent, Event, StreamSpec, decode, encode, stream_of
from .events import deadletter as dl

log = logging.getLogger(__name__)
T = TypeVar("T")

DUPLICATE_WINDOW_S = 3600.0  # Nats-Msg-Id dedup horizon; state checks on consume cover the rest


class Retry(Exception):
    """Handler could not finish now; redeliver after ``delay`` seconds."""

    def __init__(self, reason: str, delay: float = 2.0) -> None:
        super().__init__(reason)
        self.delay = delay


class Reject(Exception):
    """The message can never be handled; send it to the dead-letter stream with the reason."""


class SubjectTaken(Exception):
    """A ``first_on_subject`` publish found a message already stored on its subject."""


WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed Nats-Expected-Last-* check

# What a JetStream call meets while a cluster elects a leader (or a node restarts): retried.
TRANSIENT_JS_ERRORS = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


def inbox_prefix(user: str | None) -> str:
    """Where replies to ``user`` go: a prefix of its own, so NATS permissions can let each user
    subscribe to its own replies only (``_INBOX_<user>.>``), never to another service's."""
    return f"_INBOX_{user}" if user else "_INBOX"


async def connect(
    url: str | list[str],
    *,
    name: str,
    user: str | None = None,
    password: str | None = None,
    tls: Any = None,
) -> NATS:
    """Connect to one server or to any node of a cluster (a list, or URLs separated by commas);
    reconnects forever, to whichever node answers."""
    servers = [u.strip() for u in url.split(",")] if isinstance(url, str) else url

    async def on_error(exc: Exception) -> None:
        # A permissions violation names the subject; it is worth reading, and holds no secret.
        text = str(exc) if "permissions violation" in str(exc).lower() else ""
        log.warning("nats error", extra={"error": type(exc).__name__, "detail": text[:200]})

    return await nats.connect(
        servers,
        name=name,
        user=user or None,
        password=password or None,
        tls=tls,
        inbox_prefix=inbox_prefix(user),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
    )


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> None:
    """Create or update ``spec``'s stream; safe to call from every process at every start.

    An existing stream with fewer replicas is updated to ``replicas`` (JetStream adds peers
    and copies the data); one with more keeps them (never shrunk by a misconfigured instance).
    """
    config = api.StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=spec.subjects,
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
        num_replicas=replicas,
    )

    async def declare() -> None:
        try:
            await js.add_stream(config)
        except BadRequestError:
            current = await js.stream_info(spec.name)
            config.num_replicas = max(replicas, current.config.num_replicas or 1)
            await js.update_stream(config)

    await declare_with_retries(declare, f"stream {spec.name}")


async def declare_with_retries(declare: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a JetStream declaration, retrying what a restart or leader election causes (calls
    time out or find no leader for a while); one sentence if JetStream never answers."""
    for attempt in range(20):
        try:
            return await declare()
        except TRANSIENT_JS_ERRORS:
            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
    raise RuntimeError(f"could not declare {what}; check that JetStream is enabled")


async def ensure_streams(
    js: JetStreamContext, specs: Sequence[StreamSpec] = STREAMS, replicas: int = 1
) -> None:
    for spec in specs:
        await ensure_stream(js, spec, replicas)


async def publish(
    js: JetStreamContext, event: Event, *, timeout: float = 30.0, first_on_subject: bool = False
) -> api.PubAck:
    """Publish ``event`` to its stream, retrying until JetStream acknowledges it.

    Retrying is safe: the Nats-Msg-Id makes a second copy a duplicate the server drops (the ack
    says ``duplicate``). With ``first_on_subject`` the server stores it only if its subject holds
    no message yet, atomically and durably, and ``SubjectTaken`` says another message holds it.
    """
    stream = stream_of(event)
    subject = stream.subject(event)
    data = encode(event)
    headers = {"Nats-Msg-Id": event.event_id}
    if first_on_subject:
        headers["Nats-Expected-Last-Subject-Sequence"] = "0"
    delay = 0.1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    unanswered = False  # an earlier try got no ack: it may have been stored all the same
    while True:
        try:
            return await js.publish(subject, data, headers=headers, timeout=2.0)
        except TRANSIENT_JS_ERRORS:  # first: "temporarily unavailable" is an APIError too
            if loop.time() + delay > deadline:
                raise
            unanswered = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        except nats.js.errors.APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            # The subject check runs before deduplication, so a retry of a try that was stored
            # is refused too: it is ours if the stored message carries our id.
            mine = (
                await _stored_copy(js, stream.name, subject, event.event_id) if unanswered else None
            )
            if mine is None:
                raise SubjectTaken(subject) from None
            return mine


async def _stored_copy(
    js: JetStreamContext, stream: str, subject: str, msg_id: str
) -> api.PubAck | None:
    """The ack a stored message with ``msg_id`` on ``subject`` would have had, or None."""
    try:
        raw = await js.get_last_msg(stream, subject, direct=True)
    except NotFoundError:
        return None
    if (raw.headers or {}).get("Nats-Msg-Id") != msg_id:
        return None
    return api.PubAck(stream=stream, seq=raw.seq or 0, duplicate=True)


async def dead_letter(js: JetStreamContext, msg: Msg, consumer: str, reason: str) -> None:
    meta = msg.metadata
    letter = dl.DeadLetter(
        stream=meta.stream,
        subject=msg.subject,
        stream_seq=meta.sequence.stream,
        consumer=consumer,
        reason=reason[:1000],
        data=msg.data.decode("utf-8", "replace")[:65536],
    )
    await js.publish(
        dl.subject_for(meta.stream),
        msgspec.json.encode(letter),
        headers={"Nats-Msg-Id": f"dl-{meta.stream}-{meta.sequence.stream}-{consumer}"},
    )
    metrics.DEAD_LETTERS.labels(stream=meta.stream, consumer=consumer).inc()
    log.warning(
        "dead-lettered",
        extra={
            "stream": meta.stream,
            "seq": meta.sequence.stream,
            "consumer": consumer,
            "reason": reason[:200],
        },
    )


Handler = Callable[[AnyEvent, Msg], Awaitable[None]]


class BindWatcher(Protocol):
    """Told when a durable consumer is being bound, is bound, and is let go (readiness)."""

    def consumer_binding(self, stream: str, durable: str) -> None: ...
    def consumer_bound(self, stream: str, durable: str) -> None: ...
    def consumer_unbound(self, stream: str, durable: str) -> None: ...


@dataclass(frozen=True)
class ConsumerSpec:
    stream: StreamSpec
    durable: str
    filter_subjects: tuple[str, ...]
    ack_wait_s: float = 30.0
    max_deliver: int = -1  # redeliver until handled: nothing may be dropped silently
    max_ack_pending: int = 64


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    config = api.ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subjects=list(spec.filter_subjects),
    )
    await js.add_consumer(spec.stream.name, config=config)


async def _keep_alive(msg: Msg, every: float) -> None:
    """Long handlers (transcoding, uploading) tell JetStream they are still working."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def handle_one(js: JetStreamContext, msg: Msg, spec: ConsumerSpec, handler: Handler) -> None:
    try:
        event = decode(msg.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        await dead_letter(js, msg, spec.durable, f"undecodable event: {exc}")
        await msg.term()
        return
    keeper = asyncio.create_task(_keep_alive(msg, spec.ack_wait_s / 3))
    try:
        await handler(event, msg)
    except Retry as exc:
        log.info("retry later", extra={"event_id": event.event_id, "reason": str(exc)})
        await msg.nak(delay=exc.delay)
        return
    except Reject as exc:
        await dead_letter(js, msg, spec.durable, str(exc))
        await msg.term()
        return
    finally:
        keeper.cancel()
    await msg.ack_sync()


async def run_consumer(
    js: JetStreamContext,
    spec: ConsumerSpec,
    handler: Handler,
    *,
    batch: int = 8,
    concurrency: int = 1,
    watcher: BindWatcher | None = None,
) -> None:
    """Pull from a durable consumer forever; cancel the task to stop (in-flight work is naked
    implicitly by ack_wait expiry, so a killed process loses nothing)."""
    names = (spec.stream.name, spec.durable)
    if watcher:
        watcher.consumer_binding(*names)
    try:
        await ensure_consumer(js, spec)
        sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream.name)
    except BaseException:
        if watcher:
            watcher.consumer_unbound(*names)
        raise
    if watcher:
        watcher.consumer_bound(*names)
    sem = asyncio.Semaphore(concurrency)

    async def guarded(msg: Msg) -> None:
        async with sem:
            try:
                await handle_one(js, msg, spec, handler)
            except Exception:
                # An unexpected bug: nak so it is redelivered later, and keep consuming the rest.
                log.exception("handler crashed", extra={"consumer": spec.durable})
                with contextlib.suppress(Exception):
                    await msg.nak(delay=5)

    try:
        while True:
            try:
                msgs = await sub.fetch(batch=max(batch, concurrency), timeout=1.0)
            except TimeoutError:  # nats-py raises the builtin one too; nats' is a subclass
                _raise_if_cancelling()
                continue
            except (
                nats.errors.ConnectionClosedError,
                nats.js.errors.ServiceUnavailableError,
                nats.errors.NoRespondersError,
            ):
                await asyncio.sleep(0.5)
                continue
            await asyncio.gather(*(guarded(m) for m in msgs))
    finally:
        if watcher:
            watcher.consumer_unbound(*names)
        with contextlib.suppress(Exception):  # bounded: the server may be gone as well
            await asyncio.wait_for(sub.unsubscribe(), 1.0)


def _raise_if_cancelling() -> None:
    """nats-py's fetch can turn our cancellation into a TimeoutError; do not swallow it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def read_subject(
    js: JetStreamContext, stream: StreamSpec, subject: str, *, start_seq: int | None = None
) -> list[tuple[int, AnyEvent]]:
    """Every event stored under ``subject`` (wildcards allowed), oldest first, with its stream
    sequence: the event log of one aggregate, for folding with ``evolve``."""
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start_seq else api.DeliverPolicy.ALL,
        opt_start_seq=start_seq,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=subject,
    )
    sub = await js.pull_subscribe(subject, stream=stream.name, config=config)
    out: list[tuple[int, AnyEvent]] = []
    name = ""
    try:
        info = await sub.consumer_info()
        name = info.name
        pending = info.num_pending or 0
        while pending > 0:
            msgs = await sub.fetch(batch=min(pending, 512), timeout=5.0)
            for msg in msgs:
                try:
                    out.append((msg.metadata.sequence.stream, decode(msg.data)))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    # Already dead-lettered by the consumer that met it; folding skips it.
                    log.warning("skipping undecodable event", extra={"subject": msg.subject})
                pending = msg.metadata.num_pending
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        # Unsubscribing leaves the consumer on the server until its inactive threshold, and a
        # stream refuses its 1001st consumer: a busy reader would hit that within seconds.
        if name:
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream.name, name)
    return out


async def last_event(js: JetStreamContext, stream: StreamSpec, subject: str) -> AnyEvent | None:
    """The newest event on an exact subject, or None: the cheap state check before acting."""
    try:
        raw = await js.get_last_msg(stream.name, subject, direct=True)
    except NotFoundError:
        return None
    if raw.data is None:
        return None
    return decode(raw.data)
