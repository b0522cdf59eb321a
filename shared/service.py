"""The frame every service runs in: config, logs, NATS, streams, health, and a clean shutdown.

A service module provides ``async def serve(ctx) -> None`` that starts its work as tasks on
``ctx.tasks`` and returns; SIGTERM/SIGINT/SIGHUP then cancels those tasks (in-flight messages are
left unacked and come back later), drains the NATS connection and runs every cleanup registered
on ``ctx.stack``. A stop that takes longer than ``RESGUARDO_DRAIN_TIMEOUT_S`` ends the process
anyway (from a thread, so a stuck event loop cannot hold it), which nothing loses: unacked work is
redelivered.

Every service answers ``/healthz``, ``/readyz`` and ``/metrics`` on its health port
(``shared.health``); ``ctx.health`` takes its own readiness checks, and consumers started with
``ctx.consume`` report whether they are bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from . import health, logs, metrics, natsio
from .backupstore import BackupStoreError
from .backupstore.config import from_env as store_from_env
from .backupstore.spool import Spool
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
    health: health.Health
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    def consume(
        self,
        spec: natsio.ConsumerSpec,
        handler: natsio.Handler,
        *,
        batch: int = 8,
        concurrency: int = 1,
    ) -> asyncio.Task[Any]:
        """Run durable consumer ``spec`` as a task; readiness follows whether it is bound."""
        return self.spawn(
            natsio.run_consumer(
                self.js, spec, handler, batch=batch, concurrency=concurrency, watcher=self.health
            ),
            name=spec.durable,
        )


def _exit_after(seconds: float) -> None:
    """Last resort of a stop: end the process from a thread even if the event loop is stuck."""

    def expire() -> None:
        log.error("stop took too long; exiting now", extra={"drain_timeout_s": seconds})
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


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

    def on_stop_signal() -> None:
        if not stop.is_set():
            stop.set()
            _exit_after(config.drain_timeout_s)

    # SIGHUP too: a service whose terminal closes stops cleanly instead of dying mid-write.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_stop_signal)

    async with AsyncExitStack() as stack:
        # The health port opens first: a probe sees "alive, not ready" while NATS is away.
        metrics.SERVICE.info({"service": name})
        checks = health.Health(name)
        stack.push_async_callback(
            await health.serve(checks, config.health_host, config.health_port, config.run_dir)
        )
        nc = await natsio.connect(
            config.nats_url,
            name=name,
            user=config.nats_user or None,
            password=config.nats_login_password(),
        )
        stack.push_async_callback(close_nats, nc, config.drain_timeout_s / 2)
        js = nc.jetstream()
        # The owner declares its streams; everyone declares what they read, so start order
        # never matters.
        await natsio.ensure_streams(js, replicas=config.stream_replicas)
        checks.attach(nc, js)
        ctx = ServiceContext(name=name, config=config, nc=nc, js=js, stack=stack, health=checks)
        started = False

        async def serve_returned() -> str | None:
            # Not ready while serve() still sets up (migrations, its own checks, its sites).
            return None if started else "still starting"

        checks.add_check("started", serve_returned)
        await serve(ctx)
        started = True
        log.info("started")
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *ctx.tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in ctx.tasks if t.done() and not t.cancelled() and t.exception()]
        for t in ctx.tasks:
            t.cancel()
        # A task stuck on a server that is gone too is left behind: the process is ending.
        stuck: set[asyncio.Task[Any]] = set()
        if ctx.tasks:
            _, stuck = await asyncio.wait(ctx.tasks, timeout=config.drain_timeout_s / 4)
        waiter.cancel()
        if failed:
            exc = failed[0].exception()
            log.error(
                "a task failed; exiting so the supervisor restarts us",
                extra={"task": failed[0].get_name(), "error": repr(exc)},
            )
            raise SystemExit(1)
    if stuck:
        # asyncio.run would wait for them forever: nothing is lost by not waiting (their
        # messages are unacked and come back), so end here.
        log.warning(
            "stopped; abandoning stuck tasks", extra={"tasks": sorted(t.get_name() for t in stuck)}
        )
        logging.shutdown()
        os._exit(0)
    log.info("stopped")


def main(
    name: str, config_cls: type[C], serve: Callable[[ServiceContext[C]], Awaitable[None]]
) -> None:
    """Console entry: one sentence on bad config, exit 2; otherwise run until signalled."""
    try:
        asyncio.run(run(name, config_cls, serve))
    except (ConfigError, health.PortUnavailable, BackupStoreError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def backup_spool(ctx: ServiceContext[Any]) -> Spool:
    """The backup store of RESGUARDO_BACKUP_URL (default: the backup folder itself) behind this
    machine's backup folder; checked now, so a wrong or unreachable store is one sentence at
    start, and after that by every /readyz."""
    spool = Spool(ctx.config.backup_root, store_from_env(ctx.config.backup_root))
    ctx.stack.push_async_callback(spool.close)
    await spool.store.check()

    async def reachable() -> str | None:
        await spool.store.check()
        return None

    ctx.health.add_check("backup store", reachable)
    return spool


async def close_nats(nc: NATS, timeout: float) -> None:
    """Drain (finish in-flight publishes, let go of subscriptions) when connected; when the
    server is gone too, just close, since a drain would wait for it to come back."""
    if nc.is_connected:
        try:
            await asyncio.wait_for(nc.drain(), timeout)
            return
        except Exception as exc:
            log.warning("nats drain did not finish", extra={"error": type(exc).__name__})
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2.0)


async def close_pool(pool: Any, timeout: float = 3.0) -> None:
    """Close an asyncpg pool, but never wait on it for long: when the database is gone too (the
    whole machine is stopping) a graceful close would wait for connections that never answer."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except Exception:  # TimeoutError, or a connection that broke while closing
        pool.terminate()
