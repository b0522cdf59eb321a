"""WEBHOOKS stream: what the notifier queued for, tried, delivered to and gave up on, per endpoint.

Every delivery of one recording's event to one endpoint is queued once
(``webhooks.<rid>.queued.<endpoint token>``), then each try is ``attempted``, and the delivery
ends ``delivered`` or ``gave_up``. A redelivery asked for on demand is a new queued delivery with
the same ``webhook_id`` (receivers deduplicate on it) and the same body, queued when the API's
``recording.webhook_redelivery_requested`` arrives. Never carries a secret:
bodies hold what the receiver is told (file names, sizes, hashes, remote URIs), nothing more.
"""

from __future__ import annotations

from datetime import datetime

from .base import Event, StreamSpec
from .vault import job_token

STREAM = StreamSpec(
    name="WEBHOOKS",
    prefix="webhooks",
    owner="notifier",
    description=(
        "Webhook deliveries: queued (the signed body, once per endpoint and event), every "
        "attempt with its status and latency, delivered or gave up; redeliveries asked for."
    ),
)

# The events a customer can subscribe an endpoint to (Standard Webhooks ``type`` values).
WEBHOOK_TYPES = (
    "recording.started",
    "recording.uploaded",
    "recording.retained",
    "recording.failed",
    "recording.resent",
    "recording.quarantined",
    "backup.purged",
)


def endpoint_token(endpoint_id: str) -> str:
    """The subject token of an endpoint (ids are safe already; hashed to stay one token)."""
    return job_token(endpoint_id)


class PerEndpoint(Event, frozen=True, kw_only=True):
    """An event of one endpoint's deliveries of one recording: all of them share the subjects
    ``webhooks.<rid>.*.<endpoint token>``, the log the notifier folds before each attempt (and
    what must be delivered in order)."""

    endpoint_id: str

    def subject_tail(self) -> str:
        return endpoint_token(self.endpoint_id)


class DeliveryQueued(PerEndpoint, frozen=True, kw_only=True, tag="webhook.queued"):
    """A body to deliver to one endpoint. Its ``event_id`` is the delivery's id."""

    webhook_id: str  # the ``webhook-id`` header: the same on every retry and redelivery
    webhook_type: str  # one of WEBHOOK_TYPES
    source_event_id: str
    body: str  # the exact JSON that is signed and sent
    redelivery_of: str = ""  # the delivery id this one repeats (``webhooks redeliver``)


class DeliveryAttempted(PerEndpoint, frozen=True, kw_only=True, tag="webhook.attempted"):
    delivery_id: str
    webhook_id: str
    attempt: int
    status: int  # the receiver's HTTP status; 0: no answer (refused, timed out, SSRF guard)
    latency_ms: float
    error: str = ""  # why it failed, in words (never a secret, never the body)
    next_attempt_at: datetime | None = None  # None: no retry (delivered, or given up)


class DeliveryDelivered(PerEndpoint, frozen=True, kw_only=True, tag="webhook.delivered"):
    delivery_id: str
    webhook_id: str
    attempts: int
    status: int


class DeliveryGaveUp(PerEndpoint, frozen=True, kw_only=True, tag="webhook.gave_up"):
    delivery_id: str
    webhook_id: str
    attempts: int
    reason: str


class EndpointDisabled(PerEndpoint, frozen=True, kw_only=True, tag="webhook.endpoint_disabled"):
    """The receiver answered 410 Gone: the endpoint is disabled (``recording_id``: the delivery's
    recording). Re-enable it by adding the URL again."""

    delivery_id: str
    reason: str


WebhookEvent = (
    DeliveryQueued | DeliveryAttempted | DeliveryDelivered | DeliveryGaveUp | EndpointDisabled
)
EVENTS: tuple[type[Event], ...] = (
    DeliveryQueued,
    DeliveryAttempted,
    DeliveryDelivered,
    DeliveryGaveUp,
    EndpointDisabled,
)
