"""The vault's metrics: one-shot grants issued and refused, and how long each took.

A refusal's ``reason`` is one of ``REFUSAL_REASONS`` (fixed words, never the refusal's sentence,
which names ids). Destination and tenant ids are left out of the labels: tenants come and go.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REFUSAL_REASONS = (
    "bad_request",  # a malformed recording id, job id or public key
    "not_started",  # the recording was never started
    "wrong_tenant",  # the recording belongs to another tenant
    "wrong_destination",  # neither the recording's destination nor a resend's target
    "no_attempt",  # no upload.attempt_started for this job and destination
    "no_destination",  # the destination does not exist (deleted?)
    "already_granted",  # this job had its one grant already
    "undecryptable",  # the stored credentials could not be decrypted (master keys)
)

GRANTS = Counter(
    "resguardo_vault_grants_total",
    "Grant requests answered by this vault, by outcome: issued, refused (reason: why, in one "
    "fixed word) or failed (an unexpected error; reason error). Issued ones have reason none.",
    ["outcome", "reason"],
)
GRANT_SECONDS = Histogram(
    "resguardo_vault_grant_seconds",
    "Wall time of one grant request in the vault, from its decoded request to its reply being "
    "ready (including the audit event's write to JetStream), whatever the outcome.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def grant_answered(outcome: str, reason: str, seconds: float) -> None:
    GRANTS.labels(outcome=outcome, reason=reason).inc()
    GRANT_SECONDS.observe(seconds)


# Every series from the start: a rate() over a counter that appears only at its first
# increment misses that increment.
GRANTS.labels(outcome="issued", reason="none")
GRANTS.labels(outcome="failed", reason="error")
for _reason in REFUSAL_REASONS:
    GRANTS.labels(outcome="refused", reason=_reason)
