"""Each service's local HTTP port: ``/healthz`` (alive), ``/readyz`` (ready for work) and
``/metrics`` (Prometheus text, from prometheus-client's default registry).

Readiness is a set of named checks, each an async function that returns ``None`` when fine or
one sentence saying what is wrong. Every service gets "nats" (connected) and one check per durable
consumer it runs (bound); services add their own (the database, a listening socket). A check that
takes longer than ``CHECK_TIMEOUT_S`` counts as failed: a probe must answer even when a
dependency hangs.

The port comes from ``RESGUARDO_HEALTH_PORT``; with 0 the service takes any free port. Either way
the URL it listens on is written to ``<data dir>/run/<service>.health`` so that ``resguardo
status`` and tests find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from . import metrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]
Refresh = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 2.0


class PortUnavailable(Exception):
    """The health port could not be opened; the message names the setting."""


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``/readyz``: ``checks`` maps each check's name to "ok" or what is wrong."""

    service: str
    ready: bool
    checks: dict[str, str]


class Health:
    """The readiness checks and pre-scrape refreshers of one service process."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.started = time.time()
        self._checks: dict[str, Check] = {"nats": self._nats_connected}
        self._consumers: dict[str, tuple[str, bool]] = {}  # durable -> (stream, bound)
        self._refreshers: list[Refresh] = [self._consumer_lag]

    def attach(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc, self.js = nc, js

    # -- what services register ------------------------------------------------------------
    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def before_scrape(self, refresh: Refresh) -> None:
        """``refresh`` runs before every ``/metrics`` answer (to read gauges from a database)."""
        self._refreshers.append(refresh)

    # natsio.run_consumer reports here (it knows nothing of HTTP or metrics).
    def consumer_binding(self, stream: str, durable: str) -> None:
        self._consumers[durable] = (stream, False)

    def consumer_bound(self, stream: str, durable: str) -> None:
        self._consumers[durable] = (stream, True)

    def consumer_unbound(self, stream: str, durable: str) -> None:
        if durable in self._consumers:
            self._consumers[durable] = (stream, False)

    # -- answers ---------------------------------------------------------------------------
    async def readiness(self) -> Readiness:
        checks = dict(self._checks)
        for durable in self._consumers:
            checks[f"consumer {durable}"] = self._bound_check(durable)
        results = await asyncio.gather(*(_timed(check) for check in checks.values()))
        named = {name: result or "ok" for name, result in zip(checks, results, strict=True)}
        return Readiness(
            service=self.service,
            ready=all(result is None for result in results),
            checks=named,
        )

    async def metrics_text(self) -> bytes:
        for refresh in self._refreshers:
            try:
                await asyncio.wait_for(refresh(), CHECK_TIMEOUT_S)
            except Exception as exc:  # a gauge left stale must not hide every other metric
                log.warning(
                    "metrics refresh failed", extra={"error": f"{type(exc).__name__}: {exc}"[:200]}
                )
        return generate_latest(REGISTRY)

    async def _nats_connected(self) -> str | None:
        if self.nc is None:
            return "not connected to NATS yet"
        return None if self.nc.is_connected else "not connected to NATS"

    def _bound_check(self, durable: str) -> Check:
        async def check() -> str | None:
            stream, bound = self._consumers.get(durable, ("", False))
            return None if bound else f"consumer {durable} on {stream} is not bound"

        return check

    async def _consumer_lag(self) -> None:
        if self.js is None:
            return
        for durable, (stream, bound) in list(self._consumers.items()):
            if not bound:
                continue
            info = await self.js.consumer_info(stream, durable)
            labels = {"stream": stream, "durable": durable}
            metrics.CONSUMER_PENDING.labels(**labels).set(info.num_pending or 0)
            metrics.CONSUMER_ACK_PENDING.labels(**labels).set(info.num_ack_pending or 0)
            metrics.CONSUMER_REDELIVERED.labels(**labels).set(info.num_redelivered or 0)


async def _timed(check: Check) -> str | None:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:.0f} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]


def health_file(run_dir: Path, service: str) -> Path:
    return run_dir / f"{service}.health"


def build_app(health: Health) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        body = {"service": health.service, "alive": True, "pid": os.getpid()}
        body["uptime_s"] = round(time.time() - health.started, 1)
        return web.json_response(body)

    async def readyz(_request: web.Request) -> web.Response:
        state = await health.readiness()
        return web.Response(
            body=msgspec.json.encode(state),
            status=200 if state.ready else 503,
            content_type="application/json",
        )

    async def metrics_page(_request: web.Request) -> web.Response:
        text = await health.metrics_text()
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


def _record_url(path: Path, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(url + "\n")
    tmp.replace(path)


def _forget_url(path: Path, url: str) -> None:
    """Remove the record only if it is still ours (a newer instance may have replaced it)."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text().strip() == url:
            path.unlink()


async def serve(
    health: Health, host: str, port: int, run_dir: Path
) -> Callable[[], Awaitable[None]]:
    """Listen on ``host:port`` (0: any free port), record the URL, and return the cleanup."""
    runner = web.AppRunner(build_app(health), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise PortUnavailable(
            f"the health port {host}:{port} could not be opened ({exc.strerror}); "
            "set RESGUARDO_HEALTH_PORT to a free port (0 takes any)"
        ) from None
    bound = runner.addresses[0][1] if runner.addresses else port
    url = f"http://{host}:{bound}"
    path = health_file(run_dir, health.service)
    _record_url(path, url)
    log.info("health listening", extra={"url": url})

    async def cleanup() -> None:
        _forget_url(path, url)
        await runner.cleanup()

    return cleanup
