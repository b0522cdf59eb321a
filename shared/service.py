"""The frame every service runs in: config, logs, NATS, streams, and a clean shutdown.

A service module provides ``async def serve(ctx) -> None`` that starts its work as tasks on
``ctx.tasks`` and returns; SIGTERM/SIGINT then cancels those tasks (in-flight messages are left
unacked and come back later), drains the NATS connection and runs every cleanup registered on
``ctx.stack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from . import logs, natsio
from .config import CommonConfig, ConfigError, load

C = TypeVar("C", bound=CommonConfig)
log = logging.getLogger(__name__)


@dataclass
class ServiceContext(Generic[C]):
    name: str
    config: C
    nc: NATS
    js: JetStreamContext
    stack: AsyncExitStack
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task


async def run(
    name: str, config_cls: type[C], serve: Callable[[ServiceContext[C]], Awaitable[None]]
) -> None:
    config = load(config_cls)
    logs.setup(name, config.log_level)
    if not config.nats_url:
        raise ConfigError(
            "RESGUARDO_NATS_URL is not set; start the system with `resguardo up` "
            "or point it at a NATS server."
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with AsyncExitStack() as stack:
        nc = await natsio.connect(
            config.nats_url,
            name=name,
            user=config.nats_user or None,
            password=config.nats_password or None,
        )
        stack.push_async_callback(nc.drain)
        js = nc.jetstream()
        # The owner declares its streams; everyone declares what they read, so start order
        # never matters.
        await natsio.ensure_streams(js)
        ctx = ServiceContext(name=name, config=config, nc=nc, js=js, stack=stack)
        await serve(ctx)
        log.info("started")
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *ctx.tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in ctx.tasks if t.done() and not t.cancelled() and t.exception()]
        for t in ctx.tasks:
            t.cancel()
        for t in ctx.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        waiter.cancel()
        if failed:
            exc = failed[0].exception()
            log.error(
                "a task failed; exiting so the supervisor restarts us",
                extra={"task": failed[0].get_name(), "error": repr(exc)},
            )
            raise SystemExit(1)
        log.info("stopped")


def main(
    name: str, config_cls: type[C], serve: Callable[[ServiceContext[C]], Awaitable[None]]
) -> None:
    """Console entry: one sentence on bad config, exit 2; otherwise run until signalled."""
    try:
        asyncio.run(run(name, config_cls, serve))
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
