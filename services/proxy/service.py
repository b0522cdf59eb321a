"""The proxy service: WHIP over HTTPS in, encoded-frame capture segments and CAPTURES events out."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from shared import checks, natsio
from shared.recording_key import RecordingKey, fetch_recording_key
from shared.service import ServiceContext, backup_spool, main
from shared.tls import ensure_self_signed, server_context

from . import metrics
from .config import ProxyConfig
from .salvage import salvage
from .session import Publish, Sessions, make_publish
from .stop import STOP_CONSUMER, follow_stops, stop_handler
from .whip import build_app

log = logging.getLogger(__name__)


async def serve(ctx: ServiceContext[ProxyConfig]) -> None:
    config = ctx.config
    if config.tls_cert is not None and config.tls_key is not None:
        cert, key = config.tls_cert, config.tls_key
    else:
        cert, key = ensure_self_signed(config.data_dir / "tls")
    ssl_context = server_context(cert, key)
    publish = make_publish(ctx.js)
    backup_root = config.backup_root

    async def fetch_key(recording_id: str, tenant_id: str, purpose: str) -> RecordingKey:
        return await fetch_recording_key(
            ctx.nc, recording_id=recording_id, tenant_id=tenant_id, purpose=purpose, service="proxy"
        )

    spool = await backup_spool(ctx)
    keep = spool.keep if spool.remote else None
    recovered = await salvage(ctx.js, backup_root, publish, fetch_key, keep)
    metrics.SALVAGED_EVENTS.inc(recovered)
    if recovered:
        log.info("recovered capture events after a restart", extra={"events": recovered})

    sessions = Sessions(config, keep=keep)
    app = build_app(
        sessions=sessions, js=ctx.js, publish=publish, backup_root=backup_root, fetch_key=fetch_key
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.whip_host, config.whip_port, ssl_context=ssl_context)
    await site.start()
    ctx.health.add_check("whip", checks.listening(runner, "WHIP"))
    ctx.health.before_scrape(lambda: metrics.refresh(sessions))
    log.info("whip listening", extra={"host": config.whip_host, "port": config.whip_port})

    async def shutdown() -> None:
        await site.stop()
        await sessions.end_all("proxy shutting down")
        await runner.cleanup()

    ctx.stack.push_async_callback(shutdown)
    ctx.spawn(consume_stops(ctx, sessions, publish), "proxy-stop")
    ctx.spawn(follow_stops(ctx.js, sessions), "proxy-stop-broadcast")


async def consume_stops(
    ctx: ServiceContext[ProxyConfig], sessions: Sessions, publish: Publish
) -> None:
    """Run ``proxy-stop`` for good: a NATS hiccup must not end the process (and with it every
    live WHIP session), so the consumer is restarted here instead."""
    handler = stop_handler(ctx.js, sessions, publish, ctx.config.proxy_close_wait_s)
    while True:
        try:
            await natsio.run_consumer(ctx.js, STOP_CONSUMER, handler, watcher=ctx.health)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("stop consumer failed; restarting it", extra={"error": type(exc).__name__})
            await asyncio.sleep(1.0)


def run() -> None:
    main("proxy", ProxyConfig, serve)
