"""The notifier's metrics: deliveries queued, attempts and how they ended.

Endpoint and tenant ids are left out of the labels: they come and go without bound.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

OUTCOMES = (
    "delivered",  # the receiver answered 2xx
    "retry",  # another status, a timeout or no connection: tried again after a backoff
    "gave_up",  # past the retry policy, the endpoint disabled (410 Gone) or removed
)

QUEUED = Counter(
    "resguardo_webhook_queued_total",
    "Webhook deliveries queued (one per event and subscribed endpoint), by webhook type.",
    ["webhook_type"],
)
ATTEMPTS = Counter(
    "resguardo_webhook_attempts_total",
    "Webhook delivery attempts, by outcome: delivered, retry (failed, tried again later) or "
    "gave_up.",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "resguardo_webhook_attempt_seconds",
    "How long receivers took to answer one delivery attempt (or to fail it).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SECRET_JOBS = Counter(
    "resguardo_webhook_secret_jobs_total",
    "Sending jobs opened: each asks the vault for one endpoint's signing secrets (audited).",
)


def prime() -> None:
    """Every label value at zero from the start, so an alert's rate() sees the first one."""
    for outcome in OUTCOMES:
        ATTEMPTS.labels(outcome=outcome)
