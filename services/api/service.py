"""The API service: HTTPS server, projector tasks, and the bootstrap of tokens and schema."""

from __future__ import annotations

import logging

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from shared import checks, signing
from shared.service import ServiceContext, close_pool, main
from shared.tls import ensure_self_signed, server_context

from . import db, metrics, projector, tokens
from .app import Deps, SigningKey, build_app
from .config import ApiConfig
from .vault import VaultClient
from .webhook_vault import WebhookVaultClient

log = logging.getLogger(__name__)


async def serve(ctx: ServiceContext[ApiConfig]) -> None:
    config = ctx.config
    pool = await db.connect(config.database_url)
    ctx.stack.push_async_callback(close_pool, pool)
    await db.migrate(pool)
    await tokens.bootstrap(pool, config.data_dir)

    if config.tls_cert and config.tls_key:
        cert, key = config.tls_cert, config.tls_key
    else:
        cert, key = ensure_self_signed(config.data_dir / "tls")
    ssl_context = server_context(cert, key)

    projectors = {
        f"projector {stream.name}": ctx.spawn(
            projector.follow(ctx.js, pool, stream), name=f"projector-{stream.name}"
        )
        for stream in projector.PROJECTED
    }
    ctx.health.add_check("database", checks.database(pool))
    ctx.health.add_check("projectors", checks.tasks_running(projectors))
    ctx.health.before_scrape(lambda: metrics.refresh(pool, ctx.js, projector.PROJECTED))

    vault = VaultClient(ctx.nc)
    deps = Deps(
        config=config,
        pool=pool,
        js=ctx.js,
        vault=vault,
        webhooks=WebhookVaultClient(vault),
        signing=load_signing_key(config),
    )
    runner = web.AppRunner(build_app(deps), access_log=logging.getLogger("services.api.access"))
    await runner.setup()
    ctx.stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, config.api_host, config.api_port, ssl_context=ssl_context)
    await site.start()
    ctx.health.add_check("https", checks.listening(runner, "HTTPS API"))
    log.info(
        "listening",
        extra={"url": f"https://{config.api_host}:{config.api_port}", "cert": str(cert)},
    )


def load_signing_key(config: ApiConfig) -> SigningKey:
    """Only the public half is kept: the private key object is dropped at once."""
    private = signing.load_or_create(signing.key_path(config.data_dir, config.signing_key_file))
    public = private.public_key()
    del private
    return SigningKey(
        public_key_pem=public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        key_id=signing.key_id(public),
    )


def run() -> None:
    main("api", ApiConfig, serve)
