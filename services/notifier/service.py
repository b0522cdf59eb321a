"""The notifier as a service: fan-out consumers queue deliveries, a pipelined consumer sends them.

Wiring only: what is sent is ``bodies``, when is ``policy``, how is ``deliver``/``sender``.
"""

from __future__ import annotations

import logging

from shared import service
from shared.service import ServiceContext

from . import metrics, pump
from .config import NotifierConfig
from .deliver import Deliverer, consumer_spec, sweep_leases
from .endpoints import Endpoints
from .fanout import CONSUMERS, Fanout
from .policy import RetryPolicy
from .secret_lease import SecretLeases
from .sender import Sender
from .targets import TargetPolicy

log = logging.getLogger(__name__)


async def serve(ctx: ServiceContext[NotifierConfig]) -> None:
    cfg = ctx.config
    metrics.prime()
    endpoints = Endpoints(ctx.nc)
    leases = SecretLeases(ctx.nc, ttl_s=cfg.webhook_secret_ttl_s)
    ctx.stack.callback(leases.clear)  # the secrets go when the process stops
    sender = Sender(
        TargetPolicy(allow_private=cfg.webhook_allow_private), timeout_s=cfg.webhook_timeout_s
    )
    ctx.stack.push_async_callback(sender.close)
    fanout = Fanout(ctx.js, endpoints)
    for spec in CONSUMERS.values():
        ctx.consume(spec, fanout.handle)
    deliverer = Deliverer(
        ctx.js,
        endpoints,
        leases,
        sender,
        RetryPolicy(
            base_s=cfg.webhook_retry_base_s,
            max_s=cfg.webhook_retry_max_s,
            give_up_after_s=cfg.webhook_give_up_after_s,
        ),
        endpoint_concurrency=cfg.webhook_endpoint_concurrency,
    )
    spec = consumer_spec(cfg.webhook_ack_wait_s)
    ctx.spawn(
        pump.run_pipelined(
            ctx.js, spec, deliverer.handle, slots=cfg.webhook_concurrency, watcher=ctx.health
        ),
        name=spec.durable,
    )
    ctx.spawn(sweep_leases(leases, min(cfg.webhook_secret_ttl_s, 30.0)), name="secret-sweeper")
    if cfg.webhook_allow_private:
        log.warning("webhooks may reach private and loopback addresses (development setting)")


def run() -> None:
    service.main("notifier", NotifierConfig, serve)
