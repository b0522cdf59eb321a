"""Pages of recordings for ``/v1/recordings`` and ``/v1/retained``: filtered, newest first,
keyed by (created_at, recording_id) so a cursor stays valid while new recordings land, each with
what the dashboard's table shows beyond the view, read from the recording's events:

- ``duration_s``: the longest sealed media file's duration; before the seal, the span of the
  capture segments' wall clocks (first frame to last); None when nothing was captured yet;
- ``size_bytes``: its files (once sealed), else its capture segments so far;
- ``backup_bytes``: what its backup holds now: capture segments plus sealed files, 0 once purged;
- ``retained``: for a retained recording, why (the last ``upload.retained`` reason) and since when.

Segments are counted once each (the last event of a track's segment wins, as in ``metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from .projection import RecordingView

_view = msgspec.json.Decoder(RecordingView)


@dataclass(frozen=True)
class Filters:
    tenant_id: str | None  # None: every tenant (operators)
    states: list[str] | None = None
    destination: str | None = None  # a name or a destination id
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until
    after: tuple[datetime, str] | None = None  # the cursor: rows strictly older than this key


@dataclass(frozen=True)
class Extra:
    segment_bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    media_duration_s: float | None = None
    purged: bool = False
    retained_since: datetime | None = None
    retained_reason: str = ""


@dataclass(frozen=True)
class Row:
    view: RecordingView
    extra: Extra

    @property
    def file_bytes(self) -> int:
        return sum(f.size for f in self.view.files)

    @property
    def duration_s(self) -> float | None:
        if self.extra.media_duration_s:
            return round(self.extra.media_duration_s, 3)
        if self.extra.first_ns is not None and self.extra.last_ns is not None:
            return round(max(self.extra.last_ns - self.extra.first_ns, 0) / 1e9, 3)
        return None

    @property
    def size_bytes(self) -> int:
        return self.file_bytes or self.extra.segment_bytes

    @property
    def backup_bytes(self) -> int:
        return 0 if self.extra.purged else self.extra.segment_bytes + self.file_bytes

    def fields(self) -> dict[str, Any]:
        """What a row adds to ``recording_json``."""
        retained = None
        if self.view.state == "retained":
            retained = {
                "since": self.extra.retained_since or self.view.updated_at,
                "reason": self.extra.retained_reason,
            }
        return {
            "duration_s": self.duration_s,
            "size_bytes": self.size_bytes,
            "backup_bytes": self.backup_bytes,
            "retained": retained,
        }


async def page(pool: asyncpg.Pool, filters: Filters, limit: int) -> tuple[list[Row], bool]:
    """Up to ``limit`` rows, newest first, and whether more follow."""
    after = filters.after
    records = await pool.fetch(
        """SELECT view FROM api.recordings
           WHERE ($1::text IS NULL OR tenant_id = $1)
             AND ($2::text[] IS NULL OR state = ANY($2::text[]))
             AND ($3::text IS NULL OR view->>'destination' = $3
                  OR view->>'destination_id' = $3)
             AND ($4::timestamptz IS NULL OR created_at >= $4)
             AND ($5::timestamptz IS NULL OR created_at < $5)
             AND ($6::timestamptz IS NULL OR (created_at, recording_id) < ($6, $7::text))
           ORDER BY created_at DESC, recording_id DESC LIMIT $8""",
        filters.tenant_id,
        filters.states,
        filters.destination,
        filters.since,
        filters.until,
        after[0] if after else None,
        after[1] if after else "",
        limit + 1,
    )
    views = [_view.decode(r["view"]) for r in records[:limit]]
    extras = await extras_of(pool, [v.recording_id for v in views])
    return [Row(v, extras.get(v.recording_id, Extra())) for v in views], len(records) > limit


async def one(pool: asyncpg.Pool, view: RecordingView) -> Row:
    return Row(view, (await extras_of(pool, [view.recording_id])).get(view.recording_id, Extra()))


async def extras_of(pool: asyncpg.Pool, recording_ids: list[str]) -> dict[str, Extra]:
    if not recording_ids:
        return {}
    records = await pool.fetch(
        """WITH segment AS (
               SELECT DISTINCT ON (recording_id, summary->>'track_id', summary->>'seq')
                      recording_id, (summary->>'size')::bigint AS size,
                      (summary->>'first_wallclock_ns')::bigint AS first_ns,
                      (summary->>'last_wallclock_ns')::bigint AS last_ns
               FROM api.recording_events
               WHERE recording_id = ANY($1::text[]) AND type = 'capture.segment_written'
               ORDER BY recording_id, summary->>'track_id', summary->>'seq', stream, seq DESC
           ), segments AS (
               SELECT recording_id, sum(size) AS bytes, min(first_ns) AS first_ns,
                      max(last_ns) AS last_ns
               FROM segment GROUP BY recording_id
           ), media AS (
               SELECT e.recording_id, max((f->>'duration_s')::float8) AS duration_s
               FROM api.recording_events e, jsonb_array_elements(e.summary->'files') f
               WHERE e.recording_id = ANY($1::text[]) AND e.type = 'transcode.sealed'
                 AND f->>'role' = 'media'
               GROUP BY e.recording_id
           ), purged AS (
               SELECT DISTINCT recording_id FROM api.recording_events
               WHERE recording_id = ANY($1::text[]) AND type = 'upload.backup_purged'
           ), retained AS (
               SELECT DISTINCT ON (recording_id) recording_id, occurred_at,
                      summary->>'reason' AS reason
               FROM api.recording_events
               WHERE recording_id = ANY($1::text[]) AND type = 'upload.retained'
               ORDER BY recording_id, occurred_at DESC, stream DESC, seq DESC
           )
           SELECT ids.rid, s.bytes, s.first_ns, s.last_ns, m.duration_s,
                  p.recording_id IS NOT NULL AS purged, r.occurred_at AS retained_since,
                  r.reason AS retained_reason
           FROM unnest($1::text[]) AS ids(rid)
           LEFT JOIN segments s ON s.recording_id = ids.rid
           LEFT JOIN media m ON m.recording_id = ids.rid
           LEFT JOIN purged p ON p.recording_id = ids.rid
           LEFT JOIN retained r ON r.recording_id = ids.rid""",
        recording_ids,
    )
    return {
        r["rid"]: Extra(
            segment_bytes=int(r["bytes"] or 0),
            first_ns=r["first_ns"],
            last_ns=r["last_ns"],
            media_duration_s=r["duration_s"],
            purged=bool(r["purged"]),
            retained_since=r["retained_since"],
            retained_reason=r["retained_reason"] or "",
        )
        for r in records
    }
