"""The vault's webhook endpoints: stored with their signing secrets encrypted, and the secrets
handed to a notifier once per sending job, sealed and audited (like an upload's grant).

The API makes each secret and seals it to the vault's key (``webhook_rpc.secret_context``), so a
secret is in clear only in the API's answer to its owner, inside the vault while it is encrypted
or sealed again, and inside the notifier while it signs. Every change is audited on the VAULT
stream (``vault.webhook_changed``), every secret handed out or refused too.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.js import JetStreamContext

from shared import natsio, sealedbox
from shared.events import event_id, now
from shared.events import vault as vault_events
from shared.events.webhooks import WEBHOOK_TYPES
from shared.ids import TENANT_ID_RE, is_webhook_id
from shared.vault_rpc import Problem
from shared.webhook_rpc import (
    MAX_GRACE_S,
    WebhookCreate,
    WebhookDisable,
    WebhookListReply,
    WebhookQuery,
    WebhookReply,
    WebhookRotate,
    WebhookSecretsReply,
    WebhookSecretsRequest,
    WebhookView,
    secret_context,
    secrets_context,
)

from . import aead, crypto
from . import webhook_store as store
from .keys import KeyRing

log = logging.getLogger(__name__)

ALL_TENANTS = "*"
MAX_URL = 2048
MAX_DESCRIPTION = 500
SECRET_PREFIX = b"whsec_"
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def view_of(row: store.EndpointRow, secret_rows: list[store.SecretRow]) -> WebhookView:
    return WebhookView(
        endpoint_id=row.endpoint_id,
        tenant_id=row.tenant_id,
        url=row.url,
        events=row.events,
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        secret_fingerprint=secret_rows[0].fingerprint if secret_rows else "",
        secrets=len(secret_rows),
    )


def _problem(status: int, message: str, field: str = "") -> WebhookReply:
    return WebhookReply(problem=Problem(status=status, message=message, field=field))


def _check_ids(tenant_id: str, endpoint_id: str, *, any_tenant: bool = False) -> Problem | None:
    if not (TENANT_ID_RE.match(tenant_id) or (any_tenant and tenant_id == ALL_TENANTS)):
        return Problem(status=422, message="tenant_id is not a valid tenant id", field="tenant_id")
    if endpoint_id and not is_webhook_id(endpoint_id):
        return Problem(
            status=422, message="endpoint_id is not a webhook endpoint id", field="endpoint_id"
        )
    return None


def check_secret(secret: bytes) -> str | None:
    """Why ``secret`` is not ``whsec_`` + base64 of 24..64 bytes, or None."""
    if not secret.startswith(SECRET_PREFIX):
        return "a webhook secret starts with whsec_"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return "a webhook secret is whsec_ and base64"
    return None if 24 <= len(key) <= 64 else "a webhook secret holds 24 to 64 bytes"


def check_endpoint(url: str, events: list[str], description: str) -> Problem | None:
    """The shape rules (the API checks the target's addresses too, with DNS; the notifier again
    on every connection)."""
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("https", "http") or not parts.hostname:
        return Problem(status=422, message="url must be an https URL", field="url")
    unknown = sorted(set(events) - set(WEBHOOK_TYPES))
    if unknown:
        return Problem(
            status=422,
            message=f"unknown event types {', '.join(unknown)}; "
            f"choose from {', '.join(WEBHOOK_TYPES)}",
            field="events",
        )
    if len(description) > MAX_DESCRIPTION or not description.isprintable():
        return Problem(
            status=422,
            message=f"description must be at most {MAX_DESCRIPTION} printable characters",
            field="description",
        )
    return None


@dataclass
class WebhookEndpoints:
    ring: KeyRing
    vault_key: X25519PrivateKey
    pool: asyncpg.Pool
    js: JetStreamContext

    async def create(self, req: WebhookCreate) -> WebhookReply:
        problem = _check_ids(req.tenant_id, req.endpoint_id) or check_endpoint(
            req.url, req.events, req.description
        )
        if problem is None and not req.endpoint_id:
            problem = Problem(status=422, message="endpoint_id is missing", field="endpoint_id")
        if problem is not None:
            return WebhookReply(problem=problem)
        secret = self._open(req.tenant_id, req.endpoint_id, req.sealed_secret)
        if isinstance(secret, WebhookReply):
            return secret
        row = store.EndpointRow(
            endpoint_id=req.endpoint_id,
            tenant_id=req.tenant_id,
            url=req.url,
            events=sorted(set(req.events)),
            description=req.description,
            enabled=True,
            disabled_reason="",
            created_at=now(),
        )
        try:
            secret_row = self._encrypt(req.tenant_id, req.endpoint_id, secret)
        finally:
            aead.wipe(secret)
        try:
            await store.insert(self.pool, row, secret_row)
        except asyncpg.UniqueViolationError:
            return _problem(409, f"webhook endpoint {req.endpoint_id} exists", "endpoint_id")
        await self._audit(row, "created", f"events: {','.join(row.events) or 'all'}")
        stored = await store.get(self.pool, req.tenant_id, req.endpoint_id)
        assert stored is not None
        return WebhookReply(endpoint=view_of(stored, [secret_row]))

    async def list(self, q: WebhookQuery) -> WebhookListReply:
        if _check_ids(q.tenant_id, "", any_tenant=True):
            return WebhookListReply(endpoints=[])
        rows = await store.list_for(
            self.pool, q.tenant_id, q.event_type, enabled_only=bool(q.event_type)
        )
        return WebhookListReply(
            endpoints=[
                view_of(r, await store.signing_secrets(self.pool, r.endpoint_id)) for r in rows
            ]
        )

    async def get(self, q: WebhookQuery) -> WebhookReply:
        problem = _check_ids(q.tenant_id, q.endpoint_id, any_tenant=True)
        if problem:
            return WebhookReply(problem=problem)
        row = await store.get(self.pool, q.tenant_id, q.endpoint_id)
        if row is None:
            return _not_found(q.endpoint_id)
        return WebhookReply(
            endpoint=view_of(row, await store.signing_secrets(self.pool, row.endpoint_id))
        )

    async def remove(self, q: WebhookQuery) -> WebhookReply:
        problem = _check_ids(q.tenant_id, q.endpoint_id)
        if problem:
            return WebhookReply(problem=problem)
        row = await store.remove(self.pool, q.tenant_id, q.endpoint_id)
        if row is None:
            return _not_found(q.endpoint_id)
        await self._audit(row, "removed")
        return WebhookReply(endpoint=view_of(row, []))

    async def rotate(self, req: WebhookRotate) -> WebhookReply:
        problem = _check_ids(req.tenant_id, req.endpoint_id)
        if problem:
            return WebhookReply(problem=problem)
        if not 0 <= req.grace_s <= MAX_GRACE_S:
            return _problem(
                422, f"grace_s must be from 0 to {MAX_GRACE_S} seconds (7 days)", "grace_s"
            )
        row = await store.get(self.pool, req.tenant_id, req.endpoint_id)
        if row is None:
            return _not_found(req.endpoint_id)
        secret = self._open(req.tenant_id, req.endpoint_id, req.sealed_secret)
        if isinstance(secret, WebhookReply):
            return secret
        try:
            secret_row = self._encrypt(req.tenant_id, req.endpoint_id, secret)
        finally:
            aead.wipe(secret)
        await store.rotate(self.pool, secret_row, timedelta(seconds=req.grace_s))
        await self._audit(row, "rotated", f"old secrets sign for {req.grace_s} s more")
        return WebhookReply(
            endpoint=view_of(row, await store.signing_secrets(self.pool, row.endpoint_id))
        )

    async def disable(self, req: WebhookDisable) -> WebhookReply:
        problem = _check_ids(req.tenant_id, req.endpoint_id)
        if problem:
            return WebhookReply(problem=problem)
        row = await store.disable(self.pool, req.tenant_id, req.endpoint_id, req.reason[:500])
        if row is None:
            return _not_found(req.endpoint_id)
        await self._audit(row, "disabled", req.reason[:500])
        return WebhookReply(endpoint=view_of(row, []))

    async def secrets(self, req: WebhookSecretsRequest, requester: str) -> WebhookSecretsReply:
        """The signing secrets, sealed to the notifier's job key; once per job, audited."""
        reason = await self._refusal(req)
        if reason is not None:
            await self._audit_refusal(req, requester, reason.message)
            return WebhookSecretsReply(problem=reason)
        rows = await store.signing_secrets(self.pool, req.endpoint_id)
        endpoint = await store.get(self.pool, req.tenant_id, req.endpoint_id)
        if not rows or endpoint is None:
            problem = Problem(status=404, message="the endpoint has no signing secret")
            await self._audit_refusal(req, requester, problem.message)
            return WebhookSecretsReply(problem=problem)
        plain = bytearray()
        parts: list[bytearray] = []
        try:
            for r in rows:
                parts.append(
                    crypto.decrypt_secret(
                        self.ring.current(),
                        endpoint.tenant_id,
                        store.aad_id(r.endpoint_id, r.secret_id),
                        r.ciphertext,
                        r.wrapped_key,
                        r.key_version,
                    )
                )
            # JSON by hand into a buffer we own (secrets are base64: nothing to escape).
            plain += b'{"secrets":['
            for i, part in enumerate(parts):
                plain += b',"' if i else b'"'
                plain += part  # appended in place: no immutable copy of a secret is made
                plain += b'"'
            plain += b'],"valid_until":'
            expiries = [r.expires_at for r in rows if r.expires_at is not None]
            plain += msgspec.json.encode(min(expiries) if expiries else FAR_FUTURE) + b"}"
            sealed = sealedbox.seal(
                req.public_key, bytes(plain), secrets_context(req.endpoint_id, req.job_id)
            )
        except (aead.AeadError, crypto.UnknownKeyVersion):
            problem = Problem(
                status=500, message="the endpoint's stored secrets could not be decrypted"
            )
            await self._audit_refusal(req, requester, problem.message)
            return WebhookSecretsReply(problem=problem)
        except sealedbox.SealError as exc:
            return WebhookSecretsReply(
                problem=Problem(status=422, message=f"public_key: {exc}", field="public_key")
            )
        finally:
            for part in parts:
                aead.wipe(part)
            aead.wipe(plain)
        issued = vault_events.WebhookSecretIssued(
            event_id=event_id(req.endpoint_id, "webhook_secret", req.job_id, secrets.token_hex(8)),
            recording_id=req.endpoint_id,
            tenant_id=endpoint.tenant_id,
            occurred_at=now(),
            job_id=req.job_id,
            endpoint_id=req.endpoint_id,
            requester=requester,
            secrets=len(rows),
        )
        try:
            await natsio.publish(self.js, issued, first_on_subject=True)
        except natsio.SubjectTaken:
            return WebhookSecretsReply(
                problem=Problem(
                    status=409,
                    message=f"job {req.job_id} was handed the secrets once; start a new job",
                )
            )
        return WebhookSecretsReply(sealed=sealed)

    async def _refusal(self, req: WebhookSecretsRequest) -> Problem | None:
        problem = _check_ids(req.tenant_id, req.endpoint_id)
        if problem:
            return problem
        if not req.job_id or len(req.job_id) > 200 or not req.job_id.isprintable():
            return Problem(status=422, message="job_id must be 1 to 200 printable characters")
        if len(req.public_key) != 32:
            return Problem(status=422, message="public_key must be a raw 32-byte X25519 key")
        endpoint = await store.get(self.pool, req.tenant_id, req.endpoint_id)
        if endpoint is None:
            return Problem(status=404, message=f"no webhook endpoint {req.endpoint_id}")
        if not endpoint.enabled:
            return Problem(status=410, message=f"webhook endpoint {req.endpoint_id} is disabled")
        return None

    def _open(self, tenant_id: str, endpoint_id: str, sealed: bytes) -> bytearray | WebhookReply:
        try:
            plain = bytearray(
                sealedbox.open_sealed(
                    self.vault_key, sealed, secret_context(tenant_id, endpoint_id)
                )
            )
        except sealedbox.SealError:
            return _problem(
                400,
                "sealed_secret could not be opened; seal it to the vault's current public key "
                "with secret_context(tenant_id, endpoint_id)",
                "sealed_secret",
            )
        why = check_secret(bytes(plain))
        if why:
            aead.wipe(plain)
            return _problem(422, why, "sealed_secret")
        return plain

    def _encrypt(self, tenant_id: str, endpoint_id: str, secret: bytearray) -> store.SecretRow:
        secret_id = "sec_" + secrets.token_hex(8)
        sealed = crypto.encrypt_secret(
            self.ring.current(), tenant_id, store.aad_id(endpoint_id, secret_id), secret
        )
        return store.SecretRow(
            endpoint_id=endpoint_id,
            secret_id=secret_id,
            ciphertext=sealed.ciphertext,
            wrapped_key=sealed.wrapped_key,
            key_version=sealed.key_version,
            fingerprint=sealed.fingerprint,
            created_at=now(),
            expires_at=None,
        )

    async def _audit(self, row: store.EndpointRow, change: str, detail: str = "") -> None:
        await natsio.publish(
            self.js,
            vault_events.WebhookChanged(
                event_id=event_id(row.endpoint_id, "webhook_changed", change, secrets.token_hex(8)),
                recording_id=row.endpoint_id,
                tenant_id=row.tenant_id,
                occurred_at=now(),
                endpoint_id=row.endpoint_id,
                change=change,
                detail=detail,
            ),
        )
        log.info(
            "webhook endpoint " + change,
            extra={"tenant_id": row.tenant_id, "endpoint_id": row.endpoint_id},
        )

    async def _audit_refusal(self, req: WebhookSecretsRequest, requester: str, reason: str) -> None:
        endpoint = req.endpoint_id if is_webhook_id(req.endpoint_id) else "wh_invalid"
        tenant = req.tenant_id if TENANT_ID_RE.match(req.tenant_id) else "invalid"
        await natsio.publish(
            self.js,
            vault_events.WebhookSecretRefused(
                event_id=event_id(endpoint, "webhook_secret_refused", req.job_id[:200], reason),
                recording_id=endpoint,
                tenant_id=tenant,
                occurred_at=now(),
                job_id=req.job_id[:200],
                endpoint_id=endpoint,
                requester=requester,
                reason=reason,
            ),
        )
        log.warning(
            "webhook secrets refused",
            extra={"endpoint_id": endpoint, "requester": requester, "reason": reason},
        )


def _not_found(endpoint_id: str) -> WebhookReply:
    return _problem(404, f"no webhook endpoint {endpoint_id} for this tenant", "endpoint_id")
