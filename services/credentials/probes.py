"""Destination tests, the vault's half: ask an uploader to run one, wait for its answer, and keep
a destination that is being added out of every upload's reach until its test passed.

The vault never talks to customer storage (no storage SDK is even imported by it:
``tests/credentials/test_vault_imports.py``). A test is a job like an upload: the vault publishes
``vault.probe_requested`` (the fact the test's grant is checked against, see ``grants.py``); an
uploader (durable ``uploader-probe``) asks for that job's one-shot grant, writes, confirms and
deletes a test object, and publishes ``upload.probe_finished``, which the vault waits for here.

While it is tested, a destination being added lives only in ``vault.pending_destinations``,
encrypted exactly as it will be stored. Upload grants, ``list`` and ``get`` read
``vault.destinations`` alone, so no recording can be started with it or granted it. It moves there
once its test passed; on a failure or a timeout the pending row is deleted, and its data key with
it. A vault killed half-way leaves a pending row behind: it expires with the test (a grant is
refused past ``expires_at``) and is swept on the next add. ``resguardo keys rewrap`` and
``retire`` leave pending rows alone: they live for one test, and a test whose master key was
retired meanwhile fails as undecryptable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import asyncpg
import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from shared import natsio
from shared.events import decode, event_id, now
from shared.events import uploads as up_events
from shared.events import vault as vault_events
from shared.ids import new_recording_id
from shared.vault_rpc import Problem

from . import store
from .facts import Facts

log = logging.getLogger(__name__)

ADD = "add"
TEST = "test"
PURPOSES = (ADD, TEST)

# Same columns as vault.destinations, plus when the test gives up; no unique name: the name is
# taken only when the row moves to vault.destinations.
SCHEMA = """
CREATE TABLE IF NOT EXISTS vault.pending_destinations (
    destination_id text PRIMARY KEY,
    tenant_id      text NOT NULL,
    name           text NOT NULL,
    provider       text NOT NULL,
    public_config  jsonb NOT NULL,
    secret_fields  text[] NOT NULL,
    ciphertext     bytea NOT NULL,
    wrapped_key    bytea NOT NULL,
    key_version    integer NOT NULL,
    fingerprint    text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
"""


def wait_s(timeout_s: float) -> float:
    """How long the vault waits for a test's answer: the test's own time, plus time for an
    uploader to take it and get its grant (up to 10 s). Past it no one waits for the answer, so
    the test's grant is refused too."""
    return timeout_s + min(10.0, 2.0 + timeout_s / 2)


async def create_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", store.SCHEMA_LOCK)
        await conn.execute(SCHEMA)


async def hold(pool: asyncpg.Pool, row: store.DestinationRow, expires_at: datetime) -> None:
    """Keep ``row`` pending (readable by a test's grant only) until ``expires_at``."""
    await pool.execute(
        """INSERT INTO vault.pending_destinations
               (destination_id, tenant_id, name, provider, public_config, secret_fields,
                ciphertext, wrapped_key, key_version, fingerprint, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        row.destination_id,
        row.tenant_id,
        row.name,
        row.provider,
        row.public_config,
        row.secret_fields,
        row.ciphertext,
        row.wrapped_key,
        row.key_version,
        row.fingerprint,
        row.created_at,
        expires_at,
    )


async def pending(
    pool: asyncpg.Pool, tenant_id: str, destination_id: str
) -> store.DestinationRow | None:
    """The tenant's pending row ``destination_id``, unless its test has expired."""
    r = await pool.fetchrow(
        """SELECT destination_id, tenant_id, name, provider, public_config, secret_fields,
                  ciphertext, wrapped_key, key_version, fingerprint, created_at
             FROM vault.pending_destinations
            WHERE tenant_id = $1 AND destination_id = $2 AND expires_at > now()""",
        tenant_id,
        destination_id,
    )
    return store.row_of(r) if r is not None else None


async def release(pool: asyncpg.Pool, destination_id: str) -> None:
    """Delete a pending row (its wrapped data key with it: crypto-shredding)."""
    await pool.execute(
        "DELETE FROM vault.pending_destinations WHERE destination_id = $1", destination_id
    )


async def sweep(pool: asyncpg.Pool) -> None:
    """Delete the pending rows whose test expired (left by a vault that died while waiting)."""
    status = await pool.execute("DELETE FROM vault.pending_destinations WHERE expires_at <= now()")
    if status != "DELETE 0":
        log.info("expired pending destinations deleted", extra={"status": status})


async def run(
    js: JetStreamContext,
    facts: Facts,
    row: store.DestinationRow,
    *,
    purpose: str,
    timeout_s: float,
) -> up_events.ProbeFinished | None:
    """Ask an uploader to test ``row``; its answer, or None when none came within
    ``wait_s(timeout_s)``."""
    probe_id = new_recording_id()  # names no recording: the test's own subjects and object key
    request = vault_events.ProbeRequested(
        event_id=event_id(probe_id, "probe_requested"),
        recording_id=probe_id,
        tenant_id=row.tenant_id,
        occurred_at=now(),
        job_id=f"probe-{probe_id}",
        destination_id=row.destination_id,
        provider=row.provider,
        purpose=purpose,
        timeout_s=timeout_s,
    )
    answer: asyncio.Future[up_events.ProbeFinished] = asyncio.get_running_loop().create_future()

    async def on_message(msg: Msg) -> None:
        try:
            event = decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return
        if isinstance(event, up_events.ProbeFinished) and event.job_id == request.job_id:
            if not answer.done():
                answer.set_result(event)

    # Listening first, from the subject's start: the answer can never be missed.
    sub = await js.subscribe(
        up_events.STREAM.filter("probe_finished", probe_id),
        stream=up_events.STREAM.name,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
        cb=on_message,
    )
    try:
        facts.remember(request)  # its grant may come to this vault: no need to read the stream
        await natsio.publish(js, request)
        log.info(
            "destination test requested",
            extra={
                "tenant_id": row.tenant_id,
                "destination_id": row.destination_id,
                "probe_id": probe_id,
                "purpose": purpose,
            },
        )
        try:
            return await asyncio.wait_for(answer, wait_s(timeout_s))
        except TimeoutError:
            log.warning(
                "no uploader answered the destination test",
                extra={"destination_id": row.destination_id, "probe_id": probe_id},
            )
            return None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def expires_at(timeout_s: float) -> datetime:
    return now() + timedelta(seconds=wait_s(timeout_s))


def problem_of(
    outcome: up_events.ProbeFinished | None, *, timeout_s: float, fix: str
) -> Problem | None:
    """None when the test passed, else what the user is shown (the uploader's own words)."""
    if outcome is None:
        return Problem(
            status=504,
            message=(
                "The destination test got no answer: no uploader ran it within "
                f"{wait_s(timeout_s):g} s (uploaders run destination tests); check that the "
                f"uploader runs (`resguardo status`), then {fix}."
            ),
        )
    if outcome.passed:
        return None
    return Problem(
        status=outcome.status or 502,
        message=outcome.message or "The destination test failed.",
        field=outcome.field,
    )
