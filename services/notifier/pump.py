"""A durable pull consumer whose messages are handled side by side, each as soon as a slot is
free: a slow receiver's delivery holds its own slot, never the next fetch (``natsio``'s
consumer waits for a whole batch, which suits pipelines, not one-request-per-message work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import natsio

log = logging.getLogger(__name__)


async def run_pipelined(
    js: JetStreamContext,
    spec: natsio.ConsumerSpec,
    handler: natsio.Handler,
    *,
    slots: int,
    watcher: natsio.BindWatcher | None = None,
) -> None:
    names = (spec.stream.name, spec.durable)
    if watcher:
        watcher.consumer_binding(*names)
    try:
        await natsio.ensure_consumer(js, spec)
        sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream.name)
    except BaseException:
        if watcher:
            watcher.consumer_unbound(*names)
        raise
    if watcher:
        watcher.consumer_bound(*names)
    free = asyncio.Semaphore(slots)
    running: set[asyncio.Task[Any]] = set()

    async def one(msg: Msg) -> None:
        try:
            await natsio.handle_one(js, msg, spec, handler)
        except Exception:
            log.exception("handler crashed", extra={"consumer": spec.durable})
            with contextlib.suppress(Exception):
                await msg.nak(delay=5)
        finally:
            free.release()

    try:
        while True:
            await free.acquire()
            # As many as are free now (at least the one just taken).
            wanted = 1
            while wanted < slots and not free.locked():
                await free.acquire()
                wanted += 1
            try:
                msgs = await sub.fetch(batch=wanted, timeout=1.0)
            except TimeoutError:
                msgs = []
            except (
                nats.errors.ConnectionClosedError,
                nats.js.errors.ServiceUnavailableError,
                nats.errors.NoRespondersError,
            ):
                msgs = []
                await asyncio.sleep(0.5)
            for _ in range(wanted - len(msgs)):
                free.release()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            for msg in msgs:
                t = asyncio.create_task(one(msg))
                running.add(t)
                t.add_done_callback(running.discard)
    finally:
        for t in running:
            t.cancel()
        if watcher:
            watcher.consumer_unbound(*names)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), 1.0)
