"""Real parts for the notifier's tests: a vault, the notifier as a process, and an HTTP receiver
that checks every delivery with the Standard Webhooks reference library (not our code)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier.signing import generate_secret
from shared import natsio, sealedbox
from shared.embedded import free_port
from shared.events import event_id, uploads
from shared.events import webhooks as wh
from shared.ids import new_webhook_id
from shared.webhook_rpc import (
    SUBJECT_CREATE,
    SUBJECT_GET,
    SUBJECT_ROTATE,
    WebhookCreate,
    WebhookReply,
    WebhookRotate,
    WebhookView,
    secret_context,
)
from tests.credentials.helpers import rpc
from tests.servers import ServiceProcess, service_env

# Quick retries for tests; the defaults (5 s doubling up to 6 h, for 3 days) are the product's.
FAST = {
    "webhook_allow_private": "true",
    "webhook_retry_base_s": "0.3",
    "webhook_retry_max_s": "1",
    "webhook_timeout_s": "2",
    "webhook_ack_wait_s": "4",
}


def start_notifier(
    tmp: Path, nats_url: str, name: str = "notifier", **extra: str
) -> ServiceProcess:
    env = service_env(
        nats_url=nats_url, data_dir=tmp / f"{name}-data", log_level="DEBUG", **(FAST | extra)
    )
    return ServiceProcess("services.notifier", env, tmp / f"{name}.log").start()


@dataclass
class Received:
    webhook_id: str
    type: str
    body: bytes
    signatures: int  # v1 entries in webhook-signature
    at: float = field(default_factory=time.monotonic)

    @property
    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = msgspec.json.decode(self.body)["data"]
        return parsed


Behaviour = Callable[[int], Awaitable[int]]  # request number (1-based) -> HTTP status


async def always_ok(n: int) -> int:
    return 200


class Receiver:
    """An aiohttp server on loopback. Every request is verified against the secrets it holds now
    (any of them, as a receiver does during a rotation); one that fails is kept in ``refused``."""

    def __init__(self, secrets: list[str], behaviour: Behaviour = always_ok) -> None:
        self.secrets = list(secrets)
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.refused: list[str] = []
        self.requests = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.requests += 1
        n = self.requests
        verified = None
        for secret in self.secrets:
            try:
                verified = Webhook(secret).verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        if verified is None:
            self.refused.append(headers.get("webhook-id", "?"))
            return web.Response(status=401)
        status = await self.behaviour(n)
        if 200 <= status < 300:
            self.received.append(
                Received(
                    webhook_id=headers["webhook-id"],
                    type=verified["type"],
                    body=body,
                    signatures=len(headers["webhook-signature"].split()),
                )
            )
        return web.Response(status=status)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def types(self, recording_id: str) -> list[str]:
        return [r.type for r in self.received if r.data["recording_id"] == recording_id]


async def create_endpoint(
    nc: NATS,
    vault_key: bytes,
    tenant_id: str,
    url: str,
    events: list[str] | None = None,
) -> tuple[WebhookView, str]:
    """What the API does on ``POST /v1/webhooks``: a secret, sealed to the vault."""
    endpoint_id = new_webhook_id()
    secret = generate_secret().reveal()
    sealed = sealedbox.seal(vault_key, secret.encode(), secret_context(tenant_id, endpoint_id))
    request = WebhookCreate(
        tenant_id=tenant_id,
        endpoint_id=endpoint_id,
        url=url,
        events=events or [],
        sealed_secret=sealed,
    )
    reply = await rpc(nc, SUBJECT_CREATE, request, WebhookReply)
    assert reply.endpoint is not None, reply.problem
    return reply.endpoint, secret


async def rotate_secret(
    nc: NATS, vault_key: bytes, endpoint: WebhookView, grace_s: int = 3600
) -> str:
    secret = generate_secret().reveal()
    sealed = sealedbox.seal(
        vault_key, secret.encode(), secret_context(endpoint.tenant_id, endpoint.endpoint_id)
    )
    request = WebhookRotate(
        tenant_id=endpoint.tenant_id,
        endpoint_id=endpoint.endpoint_id,
        sealed_secret=sealed,
        grace_s=grace_s,
    )
    reply = await rpc(nc, SUBJECT_ROTATE, request, WebhookReply)
    assert reply.endpoint is not None, reply.problem
    return secret


async def endpoint_view(nc: NATS, endpoint: WebhookView) -> WebhookView:
    from shared.webhook_rpc import WebhookQuery

    q = WebhookQuery(tenant_id=endpoint.tenant_id, endpoint_id=endpoint.endpoint_id)
    reply = await rpc(nc, SUBJECT_GET, q, WebhookReply)
    assert reply.endpoint is not None, reply.problem
    return reply.endpoint


def remote_file(name: str, size: int = 10) -> uploads.RemoteFile:
    return uploads.RemoteFile(
        name=name,
        uri=f"s3://bucket/rec/{name}",
        size=size,
        sha256="ab" * 32,
        checksum_algorithm="CRC32",
        checksum="AAAAAA==",
    )


async def publish_upload_events(
    js: JetStreamContext, recording_id: str, tenant_id: str, destination_id: str
) -> None:
    """What the uploader publishes for a recording whose first attempt failed, then worked."""
    common = {"recording_id": recording_id, "tenant_id": tenant_id}
    job = f"{recording_id}:1"
    await natsio.publish(
        js,
        uploads.UploadFailed(
            event_id=event_id(recording_id, "failed", job),
            occurred_at=datetime.now(UTC),
            job_id=job,
            destination_id=destination_id,
            reason="the bucket answered 503",
            transient=True,
            will_retry=True,
            **common,
        ),
    )
    files = [remote_file("alice.webm", 1234), remote_file("manifest.json", 99)]
    await natsio.publish(
        js,
        uploads.RecordingUploaded(
            event_id=event_id(recording_id, "uploaded"),
            occurred_at=datetime.now(UTC),
            job_id=f"{recording_id}:2",
            destination_id=destination_id,
            files=files,
            **common,
        ),
    )
    await natsio.publish(
        js,
        uploads.BackupPurged(
            event_id=event_id(recording_id, "purged"),
            occurred_at=datetime.now(UTC),
            job_id=f"{recording_id}:2",
            bytes_freed=1333,
            files=2,
            **common,
        ),
    )


async def webhook_events(js: JetStreamContext, recording_id: str) -> list[Any]:
    return [e for _, e in await natsio.read_subject(js, wh.STREAM, f"webhooks.{recording_id}.>")]


async def eventually(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
