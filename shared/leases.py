"""Leases: "only one instance works on this recording now", across processes and machines.

A lease is one key of the JetStream KV bucket ``LEASES`` (file storage, history 1), named
``<purpose>.<recording id>`` (``transcode.rec_...``, ``upload.rec_...``). Its value is JSON:
the holder's id (unique per attempt), the wall-clock time it expires, and how often it was renewed.

- ``acquire`` creates the key only if it is absent (``kv.create``); if it exists and its expiry
  has passed, it takes it over by updating it with the revision it read (compare-and-set: of two
  takers, exactly one update succeeds). A live lease of someone else raises ``LeaseHeld``.
- ``Lease.renew`` updates with the last revision this holder wrote; any other writer in between
  (a taker after expiry) makes it fail, and the lease is *lost* for good.
- ``Lease.release`` deletes the key with the last revision (a lost lease is left alone).
- ``hold`` acquires, renews every ttl/3 in the background, and releases at the end.

A holder must call ``confirm`` (a renew, now) right before it publishes its result and must not
publish if it raises ``LeaseLost``. That alone still leaves a holder paused between ``confirm``
and its publish for longer than the ttl: results that must exist once are therefore also
published with ``first_on_subject`` (or deterministic ids), and work products are written where
a second attempt cannot overwrite them. Expiry compares wall clocks of different machines: the
ttl must be much longer than their clock skew (NTP keeps it well under a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from . import natsio

log = logging.getLogger(__name__)

BUCKET = "LEASES"
BUCKET_MAX_AGE_S = 7 * 24 * 3600.0  # forgets released keys' tombstones; a live lease is renewed
WRONG_LAST_SEQUENCE = (10071, 10164)
Clock = Callable[[], float]


class LeaseHeld(Exception):
    """Someone else holds a live lease on the key."""

    def __init__(self, key: str, holder: str, expires_in: float) -> None:
        super().__init__(f"{key} is held by {holder} for {expires_in:.1f} s more")
        self.key = key
        self.holder = holder
        self.expires_in = expires_in


class LeaseLost(Exception):
    """The lease expired and another holder took it (or it was removed): stop, publish nothing."""


def new_holder(service: str) -> str:
    """An id for one attempt: the service, this machine and process, and a random part."""
    return f"{service}@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Record:
    holder: str
    expires_at: float
    renewals: int = 0

    def encode(self) -> bytes:
        return json.dumps(
            {"holder": self.holder, "expires_at": self.expires_at, "renewals": self.renewals}
        ).encode()

    @staticmethod
    def decode(raw: bytes | None) -> Record | None:
        """The stored lease, or None for a value that is no lease (then it can be taken)."""
        try:
            data = json.loads(raw or b"")
            return Record(str(data["holder"]), float(data["expires_at"]), int(data["renewals"]))
        except (ValueError, KeyError, TypeError):
            return None


async def ensure_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """Declare the lease bucket (idempotent, like the streams; as many replicas as they have)
    and return it."""
    config = api.KeyValueConfig(
        bucket=BUCKET,
        description="Leases: which instance works on which recording (resguardo)",
        history=1,
        storage=api.StorageType.FILE,
        direct=True,
        ttl=BUCKET_MAX_AGE_S,
        replicas=replicas,
    )

    async def declare() -> KeyValue:
        try:
            return await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            pass
        try:
            return await js.create_key_value(config)
        except nats.js.errors.BadRequestError:  # created by another process meanwhile
            return await js.key_value(BUCKET)

    return await natsio.declare_with_retries(declare, f"the KV bucket {BUCKET}")


class Lease:
    """One holder's lease on one key; see the module's docstring."""

    def __init__(
        self, kv: KeyValue, key: str, record: Record, revision: int, ttl_s: float, clock: Clock
    ) -> None:
        self.kv = kv
        self.key = key
        self.record = record
        self.revision = revision
        self.ttl_s = ttl_s
        self.clock = clock
        self.lost = False

    @property
    def holder(self) -> str:
        return self.record.holder

    def check(self) -> None:
        """Raise ``LeaseLost`` if a renew already found the lease lost, or it ran out."""
        if self.lost or self.clock() >= self.record.expires_at:
            self.lost = True
            raise LeaseLost(f"lease {self.key} of {self.holder} was lost")

    async def renew(self) -> None:
        """Extend the lease by its ttl; ``LeaseLost`` if someone else wrote the key since."""
        self.check()
        record = Record(self.holder, self.clock() + self.ttl_s, self.record.renewals + 1)
        try:
            self.revision = await self.kv.update(self.key, record.encode(), last=self.revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            self.lost = True
            raise LeaseLost(f"lease {self.key} of {self.holder} was taken over") from None
        self.record = record

    async def confirm(self) -> None:
        """Right before publishing a result: renew now, so a lost lease is known."""
        await self.renew()

    async def release(self) -> None:
        """Delete the key if it is still ours (never someone else's lease)."""
        if self.lost:
            return
        self.lost = True  # from now on this holder publishes nothing
        try:
            await self.kv.delete(self.key, last=self.revision)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCE:
                raise

    async def keep_renewed(self) -> None:
        """Renew every ttl/3 until cancelled or lost (a failed try is retried until expiry)."""
        every = self.ttl_s / 3
        while not self.lost:
            await asyncio.sleep(every)
            try:
                await self.renew()
            except LeaseLost:
                log.warning("lease lost", extra={"key": self.key, "holder": self.holder})
                return
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                # The server may be briefly away; check() marks the lease lost once it ran out.
                log.info("lease renew failed", extra={"key": self.key, "error": repr(exc)})


async def acquire(
    kv: KeyValue, key: str, holder: str, ttl_s: float, *, clock: Clock = time.time
) -> Lease:
    """Take the lease ``key`` for ``holder``: if nobody holds it, or its holder's expiry passed.
    Raises ``LeaseHeld`` if another holder's lease is live."""
    for _ in range(5):
        record = Record(holder, clock() + ttl_s)
        try:
            revision = await kv.create(key, record.encode())
            return Lease(kv, key, record, revision, ttl_s, clock)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue  # released meanwhile: try to create it again
        current = Record.decode(entry.value)
        if current is not None and current.expires_at > clock():
            raise LeaseHeld(key, current.holder, current.expires_at - clock())
        record = Record(holder, clock() + ttl_s)
        try:
            revision = await kv.update(key, record.encode(), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            continue  # another taker won: look again (it is most likely live now)
        log.info(
            "lease taken over",
            extra={"key": key, "holder": holder, "from": current.holder if current else None},
        )
        return Lease(kv, key, record, revision, ttl_s, clock)
    raise LeaseHeld(key, "another holder", ttl_s)


@asynccontextmanager
async def hold(
    kv: KeyValue, key: str, holder: str, ttl_s: float, *, clock: Clock = time.time
) -> AsyncIterator[Lease]:
    """``acquire``, renew in the background while the block runs, ``release`` at the end."""
    lease = await acquire(kv, key, holder, ttl_s, clock=clock)
    keeper = asyncio.create_task(lease.keep_renewed())
    try:
        yield lease
    finally:
        keeper.cancel()
        with contextlib.suppress(Exception):  # an unreleased lease just expires
            await lease.release()
