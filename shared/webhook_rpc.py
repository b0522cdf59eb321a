"""Request/reply contracts of the vault's webhook endpoints (core NATS, like ``vault_rpc``).

An endpoint's signing secret is a credential: the API makes it (``whsec_...``), shows it to the
user once, and seals it to the vault's public key; the vault keeps it encrypted at rest, like a
destination's secret, and hands it to a notifier only sealed to that notifier's fresh key, once
per sending job, audited (``vault.webhook_secret_issued``).

Subjects:
    rpc.vault.webhooks.create   WebhookCreate -> WebhookReply          (API)
    rpc.vault.webhooks.list     WebhookQuery  -> WebhookListReply      (API, notifier)
    rpc.vault.webhooks.get      WebhookQuery  -> WebhookReply          (API, notifier)
    rpc.vault.webhooks.remove   WebhookQuery  -> WebhookReply          (API)
    rpc.vault.webhooks.rotate   WebhookRotate -> WebhookReply          (API)
    rpc.vault.webhooks.disable  WebhookDisable -> WebhookReply         (notifier, on 410 Gone)
    rpc.vault.webhooks.secrets  WebhookSecretsRequest -> WebhookSecretsReply  (notifier only)
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from .vault_rpc import Problem

SUBJECT_CREATE = "rpc.vault.webhooks.create"
SUBJECT_LIST = "rpc.vault.webhooks.list"
SUBJECT_GET = "rpc.vault.webhooks.get"
SUBJECT_REMOVE = "rpc.vault.webhooks.remove"
SUBJECT_ROTATE = "rpc.vault.webhooks.rotate"
SUBJECT_DISABLE = "rpc.vault.webhooks.disable"
SUBJECT_SECRETS = "rpc.vault.webhooks.secrets"

DEFAULT_GRACE_S = 24 * 3600  # how long a rotated-out secret keeps signing
MAX_GRACE_S = 7 * 24 * 3600


def secret_context(tenant_id: str, endpoint_id: str) -> bytes:
    """What a secret sealed by the API to the vault is bound to (create and rotate)."""
    return f"webhook-secret\x00{tenant_id}\x00{endpoint_id}".encode()


def secrets_context(endpoint_id: str, job_id: str) -> bytes:
    """What the vault's sealed answer to a notifier is bound to."""
    return f"webhook-secrets\x00{endpoint_id}\x00{job_id}".encode()


class WebhookView(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint as anyone may see it: never a secret."""

    endpoint_id: str
    tenant_id: str
    url: str
    events: list[str]  # subscribed webhook types; empty: all of them
    description: str = ""
    enabled: bool = True
    disabled_reason: str = ""
    created_at: datetime
    secret_fingerprint: str = ""  # keyed hash of the newest secret: tells rotations apart
    secrets: int = 1  # how many secrets sign now (2 during a rotation's grace period)


class WebhookCreate(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    endpoint_id: str  # made by the API (``wh_...``), so the secret can be sealed to it
    url: str
    events: list[str] = msgspec.field(default_factory=list)
    description: str = ""
    sealed_secret: bytes  # the whsec_ string, sealed to the vault key with secret_context


class WebhookQuery(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str  # "*": every tenant (the notifier's and operators' view)
    endpoint_id: str = ""
    event_type: str = ""  # list: only endpoints subscribed to this type (and enabled)


class WebhookRotate(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    endpoint_id: str
    sealed_secret: bytes  # the new whsec_ string, sealed as for create
    grace_s: int = DEFAULT_GRACE_S


class WebhookDisable(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    endpoint_id: str
    reason: str


class WebhookReply(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: WebhookView | None = None
    problem: Problem | None = None


class WebhookListReply(msgspec.Struct, frozen=True, kw_only=True):
    endpoints: list[WebhookView]


class WebhookSecretsRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    endpoint_id: str
    job_id: str  # the notifier's own, fresh per sending job: one answer per job, audited
    public_key: bytes  # the notifier's fresh X25519 key for this job only


class WebhookSecrets(msgspec.Struct, frozen=True, kw_only=True):
    """The plaintext inside a sealed answer: the secrets that sign now, newest first."""

    secrets: list[str]
    valid_until: datetime  # the soonest a rotated-out secret stops signing (or far future)


class WebhookSecretsReply(msgspec.Struct, frozen=True, kw_only=True):
    sealed: bytes = b""  # sealed WebhookSecrets JSON, to the request's key, secrets_context
    problem: Problem | None = None
