"""The credential vault as a service: request/reply handlers on the subjects of
``shared.vault_rpc`` and ``.rpc`` (core NATS, queue group "vault").

Replies are JSON (msgspec) of the structs in ``shared.vault_rpc``; every failure is a ``Problem``
the API can map to an HTTP status. Nothing here ever logs a request body.

Each request is handled in its own task (up to ``RESGUARDO_VAULT_CONCURRENCY`` at once): a
subscription's callback runs one message at a time, so a destination test waiting for its
uploader or a grant waiting on JetStream would otherwise hold up every request behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import checks, service
from shared.service import ServiceContext
from shared.vault_rpc import (
    SUBJECT_CREATE,
    SUBJECT_DELETE,
    SUBJECT_GET,
    SUBJECT_GRANT,
    SUBJECT_LIST,
    SUBJECT_PUBLIC_KEY,
    SUBJECT_RECORDING_KEY,
    SUBJECT_TEST,
    SUBJECT_UPDATE,
    DestinationCreate,
    DestinationListReply,
    DestinationQuery,
    DestinationReply,
    DestinationUpdate,
    GrantReply,
    GrantRequest,
    ProbeReply,
    Problem,
    RecordingKeyReply,
    RecordingKeyRequest,
)

from . import probes, settings, store, webhook_routes, webhooks
from .config import VaultConfig
from .deferred import collect
from .facts import Facts
from .keys import KeyRing, load_vault_key
from .recording_keys import PURGE_CONSUMER, RecordingKeys, purge_handler
from .rows import RowCache
from .vault import Vault, check_tenant

log = logging.getLogger(__name__)

QUEUE = "vault"
REQUESTER_HEADER = "Resguardo-Service"

_encoder = msgspec.json.Encoder()
Reply = msgspec.Struct


def _routes(
    vault: Vault, recording_keys: RecordingKeys
) -> list[tuple[str, Callable[[Msg], Awaitable[Reply]]]]:
    async def public_key(msg: Msg) -> Reply:
        return vault.public_key()

    async def create(msg: Msg) -> Reply:
        return await vault.create(msgspec.json.decode(msg.data, type=DestinationCreate))

    async def list_(msg: Msg) -> Reply:
        q = msgspec.json.decode(msg.data, type=DestinationQuery)
        reply = await vault.list(q)
        # The list reply has no problem field: a tenant id that is not valid has no destinations.
        return (
            reply
            if isinstance(reply, DestinationListReply)
            else DestinationListReply(destinations=[])
        )

    async def get(msg: Msg) -> Reply:
        return await vault.get(msgspec.json.decode(msg.data, type=DestinationQuery))

    async def delete(msg: Msg) -> Reply:
        return await vault.delete(msgspec.json.decode(msg.data, type=DestinationQuery))

    async def test(msg: Msg) -> Reply:
        return await vault.test(msgspec.json.decode(msg.data, type=DestinationQuery))

    async def update(msg: Msg) -> Reply:
        req = msgspec.json.decode(msg.data, type=DestinationUpdate)
        return await settings.update(vault.pool, req, check_tenant(req.tenant_id))

    async def grant(msg: Msg) -> Reply:
        req = msgspec.json.decode(msg.data, type=GrantRequest)
        requester = (msg.headers or {}).get(REQUESTER_HEADER, "unknown")[:64]
        return await vault.grant(req, requester)

    async def recording_key(msg: Msg) -> Reply:
        req = msgspec.json.decode(msg.data, type=RecordingKeyRequest)
        requester = (msg.headers or {}).get(REQUESTER_HEADER, "unknown")[:64]
        return await recording_keys.issue(req, requester)

    return [
        (SUBJECT_PUBLIC_KEY, public_key),
        (SUBJECT_CREATE, create),
        (SUBJECT_LIST, list_),
        (SUBJECT_GET, get),
        (SUBJECT_DELETE, delete),
        (SUBJECT_TEST, test),
        (SUBJECT_UPDATE, update),
        (SUBJECT_GRANT, grant),
        (SUBJECT_RECORDING_KEY, recording_key),
    ]


def subscriptions_active(subs: list[Subscription]) -> checks.Check:
    """Readiness: every RPC subscription still takes requests (not drained, its reader alive)."""

    async def check() -> str | None:
        # nats-py has no public "is this subscription live": its own flag and reader task.
        dead = [
            sub.subject
            for sub in subs
            if sub._closed or sub._wait_for_msgs_task is None or sub._wait_for_msgs_task.done()
        ]
        return f"not subscribed to {', '.join(dead)}" if dead else None

    return check


def _failure(subject: str, status: int, message: str) -> Reply:
    problem = Problem(status=status, message=message)
    webhook_reply = webhook_routes.failure(subject, problem)
    if webhook_reply is not None:
        return webhook_reply
    if subject == SUBJECT_GRANT:
        return GrantReply(problem=problem)
    if subject == SUBJECT_TEST:
        return ProbeReply(problem=problem)
    if subject == SUBJECT_RECORDING_KEY:
        return RecordingKeyReply(problem=problem)
    return DestinationReply(problem=problem)


class Workers:
    """Runs each request in a task, at most ``limit`` at once; ``wait`` lets them finish."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def submit(self, work: Callable[[], Awaitable[None]]) -> None:
        await self._slots.acquire()  # back-pressure: the subscription stops reading when full

        async def run() -> None:
            try:
                await work()
            finally:
                self._slots.release()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _callback(
    subject: str, handler: Callable[[Msg], Awaitable[Reply]], workers: Workers
) -> Callable[[Msg], Awaitable[None]]:
    async def cb(msg: Msg) -> None:
        await workers.submit(lambda: _handle(subject, handler, msg))

    return cb


async def _handle(subject: str, handler: Callable[[Msg], Awaitable[Reply]], msg: Msg) -> None:
    deferred = collect()  # this task's own: each request runs in a task of its own
    try:
        reply = await handler(msg)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        # msgspec names the path and expected type, never the offending value.
        reply = _failure(subject, 400, f"the request to {subject} is malformed: {exc}")
    except Exception:
        log.exception("request failed", extra={"subject": subject})
        reply = _failure(
            subject, 503, "the vault could not handle the request; retry, or see its log"
        )
    if msg.reply:
        try:
            await msg.respond(_encoder.encode(reply))
        except Exception as exc:
            log.warning("could not reply", extra={"subject": subject, "error": repr(exc)})
    if deferred:
        await asyncio.sleep(0)  # the NATS client's flusher writes the reply first
        for work in deferred:
            work()


async def serve(ctx: ServiceContext[VaultConfig]) -> None:
    cfg = ctx.config
    ring = KeyRing(cfg.master_keys, cfg.master_key_path)
    vault_key = load_vault_key(cfg.vault_key_path)
    size = max(5, min(cfg.vault_concurrency, 20))
    pool = await store.connect(cfg.database_url, max_size=size)
    ctx.stack.push_async_callback(service.close_pool, pool)
    ctx.health.add_check("database", checks.database(pool))
    await store.create_schema(pool)
    await probes.create_schema(pool)  # destinations pending their test
    rows = RowCache(pool, cfg.database_url)
    await rows.start()
    ctx.stack.push_async_callback(rows.stop)
    facts = Facts(ctx.js)
    await facts.follow()
    ctx.stack.push_async_callback(facts.stop)
    vault = Vault(
        ring=ring,
        vault_key=vault_key,
        pool=pool,
        js=ctx.js,
        max_credential_chars=cfg.max_credential_chars,
        probe_timeout_s=cfg.probe_timeout_s,
        facts=facts,
        rows=rows,
    )
    recording_keys = RecordingKeys(ring=ring, pool=pool, js=ctx.js, facts=facts)
    ctx.consume(PURGE_CONSUMER, purge_handler(recording_keys))
    workers = Workers(cfg.vault_concurrency)
    subs: list[Subscription] = []
    endpoints = webhooks.WebhookEndpoints(ring=ring, vault_key=vault_key, pool=pool, js=ctx.js)
    routes = _routes(vault, recording_keys) + webhook_routes.routes(endpoints, REQUESTER_HEADER)
    for subject, handler in routes:
        subs.append(
            await ctx.nc.subscribe(subject, queue=QUEUE, cb=_callback(subject, handler, workers))
        )
    await ctx.nc.flush()
    ctx.health.add_check("rpc", subscriptions_active(subs))

    async def unsubscribe() -> None:
        # Runs before the pool closes (exit stack is LIFO): finish in-flight requests first.
        for sub in subs:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.debug("drain failed", extra={"error": repr(exc)})
        await workers.wait()

    ctx.stack.push_async_callback(unsubscribe)
    keys = ring.current()
    log.info(
        "vault ready",
        extra={
            "key_versions": sorted(keys.keys),
            "newest_key_version": keys.newest,
            "keys_from": "RESGUARDO_MASTER_KEYS" if ring.from_env else str(ring.key_file),
        },
    )


def run() -> None:
    service.main("credentials", VaultConfig, serve)
