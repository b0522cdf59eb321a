"""The uploader's metrics: what was sent where, how long it took, and how each job ended.

``provider`` is the destination's provider (s3, gcs, azure, ftp, file) as its grant names it, or
``unknown`` when a job ended before it had a grant (the vault did not answer, a refused resend).
Destination and tenant ids are left out of the labels: they come and go without bound.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.providers import PROVIDERS

UNKNOWN = "unknown"
OUTCOMES = (
    "uploaded",  # every file confirmed at the destination
    "retry",  # a transient failure: tried again after a backoff
    "retained",  # given up: the backup is kept for an operator
    "failed",  # a resend that could not even start (nothing to resend)
)
KINDS = ("transient", "permanent")

JOBS = Counter(
    "resguardo_uploader_jobs_total",
    "Upload attempts (one recording to one destination) that ended, by provider and outcome: "
    "uploaded, retry (transient failure, tried again later), retained (given up, backup kept) "
    "or failed (a resend with nothing to send).",
    ["provider", "outcome"],
)
FAILURES = Counter(
    "resguardo_uploader_failures_total",
    "Upload attempts that failed, by provider and kind: transient (timeouts, 5xx, throttling, "
    "an unreachable vault: retried) or permanent (credentials, missing bucket, a changed "
    "backup: not retried).",
    ["provider", "kind"],
)
BYTES = Counter(
    "resguardo_uploader_bytes_total",
    "Bytes of files sent and confirmed at their destination, by provider.",
    ["provider"],
)
FILES = Counter(
    "resguardo_uploader_files_total",
    "Files sent and confirmed at their destination, by provider.",
    ["provider"],
)
UPLOAD_SECONDS = Histogram(
    "resguardo_uploader_upload_seconds",
    "Wall time of one successful upload attempt (grant, every file sent and confirmed), by "
    "provider.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
)
PURGES = Counter(
    "resguardo_uploader_purges_total",
    "Backup folders deleted after a confirmed upload.",
)
PURGED_BYTES = Counter(
    "resguardo_uploader_purged_bytes_total",
    "Bytes freed by deleting backup folders after confirmed uploads.",
)


def provider_label(provider: str) -> str:
    """A grant's provider as a label: one of the known ones, never a free string."""
    return provider if provider in PROVIDERS else "other"


for _provider in (*PROVIDERS, UNKNOWN):
    for _outcome in OUTCOMES:
        JOBS.labels(provider=_provider, outcome=_outcome)
    for _kind in KINDS:
        FAILURES.labels(provider=_provider, kind=_kind)
    BYTES.labels(provider=_provider)
    FILES.labels(provider=_provider)
