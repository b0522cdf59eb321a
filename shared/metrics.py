"""Metrics every service has (prometheus-client's default registry, served by ``shared.health``).

Service-specific metrics live in ``services/<name>/metrics.py``. Names start with
``resguardo_``; counters end in ``_total``; labels never carry a secret, a participant's name or
any other value chosen by an outside party (ids and fixed words only), so the number of series
stays bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Info

SERVICE = Info("resguardo_service", "Which Resguardo service this process is.")

CONSUMER_PENDING = Gauge(
    "resguardo_consumer_pending_messages",
    "Messages stored in the stream that this durable consumer has not been given yet (its lag).",
    ["stream", "durable"],
)
CONSUMER_ACK_PENDING = Gauge(
    "resguardo_consumer_ack_pending_messages",
    "Messages given to this durable consumer and not acknowledged yet (work in flight).",
    ["stream", "durable"],
)
CONSUMER_REDELIVERED = Gauge(
    "resguardo_consumer_redelivered_messages",
    "Messages this durable consumer holds that were delivered more than once.",
    ["stream", "durable"],
)
DEAD_LETTERS = Counter(
    "resguardo_dead_letters_total",
    "Messages this process sent to the DEADLETTER stream (undecodable or rejected).",
    ["stream", "consumer"],
)
