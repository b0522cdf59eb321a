"""One job per recording across every uploader instance: the lease ``upload.<rid>``.

The in-process lock (``Uploader._recording_lock``) orders the jobs of one process; this lease
(``shared.leases``, ttl = ``RESGUARDO_UPLOAD_ACK_WAIT_S``, renewed every third of it while the
job runs) orders those of every process on every machine. A job whose message was redelivered to
a second instance while the first still holds a live lease is retried later; a first instance
that was paused (or cut off) past its lease finds it lost at its next ``confirm`` or file, and
publishes nothing more: no ``upload.uploaded``, no failure, no purge. Whatever it raises then
becomes a ``Retry``, so its message comes back and finds the work done by the new holder.

The purge happens once: it runs under the lease after a ``confirm``, its event has one id per
recording and is published ``first_on_subject``, and deleting what is already gone is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.js.kv import KeyValue

from shared import leases
from shared.leases import Lease, LeaseHeld, LeaseLost
from shared.natsio import Retry

log = logging.getLogger(__name__)

NAME = "uploader"


def lease_key(recording_id: str) -> str:
    return f"upload.{recording_id}"


@asynccontextmanager
async def claimed(kv: KeyValue, recording_id: str, ttl_s: float) -> AsyncIterator[Lease]:
    """Hold the recording's upload lease for the block; ``Retry`` if another instance has it or
    this one loses it."""
    ids = {"recording_id": recording_id}
    key, holder = lease_key(recording_id), leases.new_holder(NAME)
    try:
        async with leases.hold(kv, key, holder, ttl_s) as lease:
            try:
                yield lease
            except Exception as exc:
                if isinstance(exc, LeaseLost) or not _still_held(lease):
                    raise LeaseLost(str(exc)) from exc
                raise
    except LeaseHeld as exc:
        log.info("busy in another uploader; retrying later", extra={**ids, "holder": exc.holder})
        raise Retry(str(exc), delay=min(max(exc.expires_in, 0.5), ttl_s)) from None
    except LeaseLost as exc:
        log.warning("upload lease lost; another uploader has the job, nothing published", extra=ids)
        raise Retry(f"lease lost: {exc}", delay=ttl_s) from None


def _still_held(lease: Lease) -> bool:
    try:
        lease.check()
    except LeaseLost:
        return False
    return True
