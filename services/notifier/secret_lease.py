"""An endpoint's signing secrets, asked of the vault once per sending job and dropped after.

A job is a fresh id and a fresh X25519 key pair: the vault seals the secrets to that key, audits
the hand-over (``vault.webhook_secret_issued``), and refuses a second answer to the same job.
The notifier keeps them for ``RESGUARDO_WEBHOOK_SECRET_TTL_S`` at most (and never past a rotated
secret's end), then drops them and starts a new job. Python cannot overwrite immutable ``bytes``:
dropping shortens how long a secret lives in this process; it does not prove it is gone.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import msgspec
import nats.errors
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS

from shared import sealedbox
from shared.recording_key import REQUESTER_HEADER
from shared.webhook_rpc import (
    SUBJECT_SECRETS,
    WebhookSecrets,
    WebhookSecretsReply,
    WebhookSecretsRequest,
    secrets_context,
)

from . import metrics
from .signing import InvalidSecret, WebhookSecret


class SecretsUnavailable(Exception):
    """The vault did not hand the secrets over; ``status`` is its answer (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Lease:
    secrets: list[WebhookSecret]
    until: float  # monotonic


class SecretLeases:
    """Signing secrets per endpoint, each set from one vault job, kept for a bounded time."""

    def __init__(self, nc: NATS, *, ttl_s: float, timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._leases: dict[str, _Lease] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, tenant_id: str, endpoint_id: str) -> list[WebhookSecret]:
        lease = self._leases.get(endpoint_id)
        if lease is not None and lease.until > time.monotonic():
            return lease.secrets
        lock = self._locks.setdefault(endpoint_id, asyncio.Lock())
        async with lock:  # one job per endpoint at a time, not one per delivery
            lease = self._leases.get(endpoint_id)
            if lease is None or lease.until <= time.monotonic():
                self._leases.pop(endpoint_id, None)
                lease = await self._ask(tenant_id, endpoint_id)
                self._leases[endpoint_id] = lease
            return lease.secrets

    def drop(self, endpoint_id: str) -> None:
        """Forget an endpoint's secrets now (it was disabled or removed, or they failed)."""
        self._leases.pop(endpoint_id, None)

    def drop_expired(self) -> None:
        now = time.monotonic()
        for endpoint_id in [e for e, lease in self._leases.items() if lease.until <= now]:
            del self._leases[endpoint_id]

    def clear(self) -> None:
        self._leases.clear()

    async def _ask(self, tenant_id: str, endpoint_id: str) -> _Lease:
        key = X25519PrivateKey.generate()
        job_id = f"webhook-send-{secrets.token_hex(12)}"
        request = WebhookSecretsRequest(
            tenant_id=tenant_id,
            endpoint_id=endpoint_id,
            job_id=job_id,
            public_key=sealedbox.public_bytes(key),
        )
        metrics.SECRET_JOBS.inc()
        try:
            msg = await self._nc.request(
                SUBJECT_SECRETS,
                msgspec.json.encode(request),
                timeout=self._timeout,
                headers={REQUESTER_HEADER: "notifier"},
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise SecretsUnavailable(f"the vault did not answer ({type(exc).__name__})") from None
        try:
            reply = msgspec.json.decode(msg.data, type=WebhookSecretsReply)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise SecretsUnavailable("the vault's answer could not be read") from None
        if reply.problem is not None:
            raise SecretsUnavailable(reply.problem.message, reply.problem.status)
        try:
            plain = sealedbox.open_sealed(key, reply.sealed, secrets_context(endpoint_id, job_id))
            opened = msgspec.json.decode(plain, type=WebhookSecrets)
            parsed = [WebhookSecret.parse(s) for s in opened.secrets]
        except (sealedbox.SealError, msgspec.ValidationError, msgspec.DecodeError, InvalidSecret):
            raise SecretsUnavailable("the vault's sealed answer could not be opened") from None
        finally:
            del key
        if not parsed:
            raise SecretsUnavailable("the endpoint has no signing secret", 404)
        remaining = (opened.valid_until.timestamp() - time.time()) if opened.valid_until else 0
        ttl = min(self._ttl, max(remaining, 1.0))
        return _Lease(secrets=parsed, until=time.monotonic() + ttl)
