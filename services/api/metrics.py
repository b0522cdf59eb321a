"""The API's metrics: recordings by state and what retained recordings hold, from the read model,
and how far the read model is behind the streams.

Gauges, not counters: they are read from PostgreSQL and JetStream before every scrape
(``refresh``), so every API process reports the same numbers (sum() over instances would double
them; use max()).
"""

from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext
from prometheus_client import Gauge

from shared.events.base import StreamSpec

from . import db
from .state import STATES

RECORDINGS = Gauge(
    "resguardo_recordings",
    "Recordings in the read model by state (capturing, transcoding, uploading, uploaded, "
    "retained, failed).",
    ["state"],
)
RETAINED_RECORDINGS = Gauge(
    "resguardo_retained_recordings",
    "Recordings whose upload failed for good and whose backup is kept (state retained): each "
    "needs an operator (fix the destination, then resend).",
)
RETAINED_BYTES = Gauge(
    "resguardo_retained_bytes",
    "Bytes the backups of retained recordings hold, computed from the read model: the sizes of "
    "their capture segments (capture.segment_written) plus their sealed output files. Not "
    "measured on disk.",
)

PROJECTION_LAG = Gauge(
    "resguardo_api_projection_lag_messages",
    "Messages of the stream the read model has not applied yet (the stream's last sequence "
    "minus the projector's stored offset).",
    ["stream"],
)


async def refresh(
    pool: asyncpg.Pool, js: JetStreamContext, streams: tuple[StreamSpec, ...]
) -> None:
    """Set every gauge from the read model and the streams (a ``before_scrape`` hook)."""
    counts = await db.recording_counts(pool)
    for state in STATES:
        RECORDINGS.labels(state=state).set(counts.get(state, 0))
    RETAINED_RECORDINGS.set(counts.get("retained", 0))
    RETAINED_BYTES.set(await db.retained_backup_bytes(pool))
    offsets = await db.offsets(pool)
    for stream in streams:
        last = (await js.stream_info(stream.name)).state.last_seq
        PROJECTION_LAG.labels(stream=stream.name).set(max(last - offsets.get(stream.name, 0), 0))
