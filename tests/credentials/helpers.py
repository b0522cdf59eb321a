"""Helpers for tests that need a real vault: start it as a process, talk to it as the API would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared import natsio, sealedbox
from shared.events import event_id
from shared.events import recordings as rec_events
from shared.events import uploads as up_events
from shared.ids import new_recording_id
from shared.vault_rpc import (
    SUBJECT_CREATE,
    SUBJECT_DELETE,
    SUBJECT_GET,
    SUBJECT_GRANT,
    SUBJECT_LIST,
    SUBJECT_PUBLIC_KEY,
    DestinationCreate,
    DestinationListReply,
    DestinationQuery,
    DestinationReply,
    Grant,
    GrantReply,
    GrantRequest,
    VaultKeyReply,
    create_context,
    grant_context,
)
from tests.servers import ServiceProcess, service_env, wait_until

T = TypeVar("T")


def start_vault(
    tmp: Path, nats_url: str, database_url: str, name: str = "vault", **extra: str | Path
) -> ServiceProcess:
    data = tmp / f"{name}-data"
    env = service_env(
        nats_url=nats_url,
        database_url=database_url,
        data_dir=data,
        log_level="DEBUG",
        **extra,
    )
    return ServiceProcess("services.credentials", env, tmp / f"{name}.log").start()


def start_ready_vault(tmp: Path, nats_url: str, database_url: str) -> ServiceProcess:
    """``start_vault``, returning once it says it serves (its subscriptions flushed); stopped
    again if it dies first. For callers without an event loop (sync fixtures, benches)."""
    proc = start_vault(tmp, nats_url, database_url)
    try:
        wait_until(
            lambda: "vault ready" in proc.log_path.read_text(errors="replace") or not proc.alive(),
            timeout=60,
            message="the vault to be ready",
        )
        if not proc.alive():
            raise AssertionError(f"vault exited:\n{proc.log_path.read_text()[-3000:]}")
    except BaseException:
        proc.stop()
        raise
    return proc


async def rpc(nc: NATS, subject: str, payload: Any, reply_type: type[T], timeout: float = 5) -> T:
    msg = await nc.request(subject, msgspec.json.encode(payload), timeout=timeout)
    return msgspec.json.decode(msg.data, type=reply_type)


async def wait_ready(nc: NATS, proc: ServiceProcess, timeout: float = 30) -> bytes:
    """The vault's public key, once it answers (fails early if the process died)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not proc.alive():
            raise AssertionError(f"vault exited:\n{proc.log_path.read_text()[-3000:]}")
        try:
            reply = await rpc(nc, SUBJECT_PUBLIC_KEY, {}, VaultKeyReply, timeout=0.5)
            return reply.public_key
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError(f"vault never answered:\n{proc.log_path.read_text()[-3000:]}")


class VaultClient:
    """What the API does: seal configs to the vault's key and call the RPCs."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    async def public_key(self) -> bytes:
        return (await rpc(self.nc, SUBJECT_PUBLIC_KEY, {}, VaultKeyReply)).public_key

    async def create(
        self,
        tenant_id: str,
        name: str,
        provider: str,
        config: Any,
        *,
        context: bytes | None = None,
        probe: bool = False,
        timeout: float = 5,
    ) -> DestinationReply:
        """Create a destination; without a probe unless asked (most tests use made-up
        buckets)."""
        pub = await self.public_key()
        sealed = sealedbox.seal(
            pub, msgspec.json.encode(config), context or create_context(tenant_id, name)
        )
        req = DestinationCreate(
            tenant_id=tenant_id, name=name, provider=provider, sealed_config=sealed, probe=probe
        )
        return await rpc(self.nc, SUBJECT_CREATE, req, DestinationReply, timeout=timeout)

    async def list(self, tenant_id: str) -> DestinationListReply:
        return await rpc(
            self.nc, SUBJECT_LIST, DestinationQuery(tenant_id=tenant_id), DestinationListReply
        )

    async def get(self, tenant_id: str, *, name: str = "", destination_id: str = "") -> Any:
        q = DestinationQuery(tenant_id=tenant_id, name=name, destination_id=destination_id)
        return await rpc(self.nc, SUBJECT_GET, q, DestinationReply)

    async def delete(self, tenant_id: str, *, name: str = "", destination_id: str = "") -> Any:
        q = DestinationQuery(tenant_id=tenant_id, name=name, destination_id=destination_id)
        return await rpc(self.nc, SUBJECT_DELETE, q, DestinationReply)

    async def grant(
        self,
        *,
        job_id: str,
        recording_id: str,
        tenant_id: str,
        destination_id: str,
        key: X25519PrivateKey | None = None,
    ) -> tuple[GrantReply, Grant | None]:
        key = key or X25519PrivateKey.generate()
        req = GrantRequest(
            job_id=job_id,
            recording_id=recording_id,
            tenant_id=tenant_id,
            destination_id=destination_id,
            public_key=sealedbox.public_bytes(key),
        )
        reply = await rpc(self.nc, SUBJECT_GRANT, req, GrantReply)
        grant = None
        if reply.sealed:
            plain = sealedbox.open_sealed(key, reply.sealed, grant_context(job_id))
            grant = msgspec.json.decode(plain, type=Grant)
        return reply, grant


async def publish_started(
    js: JetStreamContext,
    recording_id: str,
    tenant_id: str,
    destination_id: str,
    *,
    name: str = "dest",
    at: datetime | None = None,
    whip_token_sha256: str = "0" * 64,
    **fields: Any,
) -> rec_events.RecordingStarted:
    """What the API publishes when a recording starts (``fields``: its other, defaulted ones)."""
    ev = rec_events.RecordingStarted(
        event_id=event_id(recording_id, "started"),
        recording_id=recording_id,
        tenant_id=tenant_id,
        occurred_at=at or datetime.now(UTC),
        destination_id=destination_id,
        destination_name=name,
        whip_token_sha256=whip_token_sha256,
        **fields,
    )
    await natsio.publish(js, ev)
    return ev


async def publish_attempt(
    js: JetStreamContext, recording_id: str, tenant_id: str, destination_id: str, job_id: str
) -> None:
    await natsio.publish(
        js,
        up_events.UploadAttemptStarted(
            event_id=event_id(recording_id, "attempt_started", job_id),
            recording_id=recording_id,
            tenant_id=tenant_id,
            occurred_at=datetime.now(UTC),
            job_id=job_id,
            attempt=1,
            destination_id=destination_id,
        ),
    )


async def announced_job(
    js: JetStreamContext, tenant_id: str, destination_id: str
) -> tuple[str, str]:
    """A started recording with one upload job announced, as the uploader leaves it just before
    asking for its grant: (recording id, job id)."""
    rid = new_recording_id()
    job = f"{rid}:1"
    await publish_started(js, rid, tenant_id, destination_id)
    await publish_attempt(js, rid, tenant_id, destination_id, job)
    return rid, job


async def publish_resend(
    js: JetStreamContext,
    recording_id: str,
    tenant_id: str,
    destination_id: str,
    request_id: str = "",
    name: str = "other",
) -> None:
    """What the API publishes on ``POST /v1/recordings/{id}/resend``."""
    request_id = request_id or f"r-{destination_id}"
    await natsio.publish(
        js,
        rec_events.ResendRequested(
            event_id=event_id(recording_id, "resend_requested", request_id),
            recording_id=recording_id,
            tenant_id=tenant_id,
            occurred_at=datetime.now(UTC),
            request_id=request_id,
            destination_id=destination_id,
            destination_name=name,
        ),
    )
