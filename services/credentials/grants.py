"""One-shot grants: the vault's half that hands out credentials (``Vault`` inherits it), to an
upload job or to a destination test (``probe: true``, checked against ``vault.probe_requested``;
see ``probes.py``).

A grant is checked against the event log (the facts, from memory or the stream) and the
destination row, decrypted into buffers that are wiped once used, sealed to the requester's fresh
key, and audited (a durable JetStream publish that is also the job's once-only lock) before the
sealed grant is returned. See the note in ``vault.py`` on what wiping can and cannot promise.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import msgspec
from nats.js import JetStreamContext

from shared import natsio, sealedbox
from shared.events import event_id, now
from shared.events import vault as vault_events
from shared.ids import TENANT_ID_RE, is_recording_id
from shared.vault_rpc import GrantReply, GrantRequest, Problem, grant_context

from . import aead, crypto, metrics, probes, store
from .deferred import after_reply
from .facts import Facts
from .rows import RowCache

log = logging.getLogger("services.credentials.vault")  # the name its log lines always had

MAX_JOB_ID = 200


@dataclass
class Refusal(Exception):
    status: int
    reason: str
    kind: str  # one of metrics.REFUSAL_REASONS


class Grants:
    js: JetStreamContext
    facts: Facts
    rows: RowCache
    pool: asyncpg.Pool

    def _decrypt(self, row: store.DestinationRow) -> bytearray:
        raise NotImplementedError  # the Vault's

    async def grant(self, req: GrantRequest, requester: str) -> GrantReply:
        started = time.perf_counter()
        outcome, kind = "failed", "error"
        try:
            reply = await self._grant(req, requester)
            outcome, kind = "issued", "none"
            return reply
        except Refusal as refusal:
            outcome, kind = "refused", refusal.kind
            await self._audit_refusal(req, requester, refusal.reason)
            log.log(
                logging.ERROR if refusal.status >= 500 else logging.WARNING,
                "grant refused",
                extra={
                    "job_id": req.job_id[:MAX_JOB_ID],
                    "destination_id": req.destination_id[:64],
                    "requester": requester,
                    "reason": refusal.reason,
                },
            )
            return GrantReply(problem=Problem(status=refusal.status, message=refusal.reason))
        finally:
            metrics.grant_answered(outcome, kind, time.perf_counter() - started)

    async def _grant(self, req: GrantRequest, requester: str) -> GrantReply:
        """The sealed grant, or a ``Refusal`` (audited and logged by ``grant``)."""
        row = await (
            self._check_probe_grant(req) if req.probe else self._check_grant(req, requester)
        )
        # Decrypt into buffers we own, splice the secret JSON into the grant JSON without ever
        # making a Python str of it, seal, then overwrite both buffers.
        secret_json: bytearray | None = None
        grant_json = bytearray()
        try:
            secret_json = self._decrypt(row)
            head = msgspec.json.encode({"provider": row.provider, "config": row.public_config})
            grant_json += head[:-1] + b',"secret":'
            grant_json += secret_json
            grant_json += b"}"
            sealed = sealedbox.seal(req.public_key, bytes(grant_json), grant_context(req.job_id))
        except (aead.AeadError, crypto.UnknownKeyVersion) as exc:
            raise Refusal(500, undecryptable(exc).message, "undecryptable") from None
        except sealedbox.SealError as exc:
            raise Refusal(422, f"public_key: {exc}", "bad_request") from None
        finally:
            if secret_json is not None:
                aead.wipe(secret_json)
            aead.wipe(grant_json)
        # The audit entry is durable (JetStream, fsync) before the grant leaves, and it is the
        # once-only lock too: the first message on the job's own subject, which the stream stores
        # only if the subject is empty. Its id is this request's own, so a stored copy with it
        # is our publish whose ack was lost, and any other holder is another request.
        issued = vault_events.GrantIssued(
            event_id=event_id(req.recording_id, "grant_issued", req.job_id, secrets.token_hex(16)),
            recording_id=req.recording_id,
            tenant_id=row.tenant_id,
            occurred_at=now(),
            job_id=req.job_id,
            destination_id=row.destination_id,
            requester=requester,
            key_version=row.key_version,
            probe=req.probe,
        )
        try:
            await natsio.publish(self.js, issued, first_on_subject=True)
        except natsio.SubjectTaken:
            raise Refusal(
                409,
                f"job {req.job_id} was already granted credentials once; start a new "
                + ("destination test" if req.probe else "upload attempt")
                + " to get a new grant",
                "already_granted",
            ) from None
        done = {
            "job_id": req.job_id,
            "recording_id": req.recording_id,
            "destination_id": row.destination_id,
            "requester": requester,
        }
        after_reply(lambda: log.info("grant issued", extra=done))  # the audit event is written
        return GrantReply(sealed=sealed)

    async def _check_grant(self, req: GrantRequest, requester: str) -> store.DestinationRow:
        _check_shape(req)
        rid = req.recording_id
        started = self.facts.known_started(rid)
        job = self.facts.known_job(rid, req.job_id)
        row = self.rows.cached(req.tenant_id, req.destination_id)
        if started is None or job is None or row is None:
            # Independent look-ups, memory first: one round trip's worth of waiting. Only then:
            # the three tasks a gather makes wait behind every ready callback of a busy loop.
            started, job, row = await asyncio.gather(
                self.facts.started(rid),
                self.facts.job(rid, req.job_id),
                self.rows.get(req.tenant_id, req.destination_id),
            )
        if started is None:
            raise Refusal(
                404, f"recording {rid} was never started; nothing can be uploaded", "not_started"
            )
        if started.tenant_id != req.tenant_id:
            raise Refusal(
                403, f"recording {rid} does not belong to the requesting tenant", "wrong_tenant"
            )
        if started.destination_id != req.destination_id and not await self.facts.resend_to(
            rid, req.destination_id
        ):
            raise Refusal(
                403,
                f"destination {req.destination_id} is neither recording {rid}'s destination "
                "nor the target of a resend request for it",
                "wrong_destination",
            )
        if (
            job is None
            or job.destination_id != req.destination_id
            or job.tenant_id != started.tenant_id
        ):
            raise Refusal(
                403,
                f"no upload attempt with job id {req.job_id} was started for recording {rid} "
                f"and destination {req.destination_id}; publish upload.attempt_started first",
                "no_attempt",
            )
        if row is None:
            raise Refusal(
                404,
                f"destination {req.destination_id} does not exist (was it deleted?)",
                "no_destination",
            )
        return row

    async def _check_probe_grant(self, req: GrantRequest) -> store.DestinationRow:
        """A destination test's grant: for the job of a ``vault.probe_requested`` that names
        this tenant and destination, while the vault still waits for its answer. A destination
        being added is read from the pending rows: nothing else can grant it."""
        _check_shape(req)
        asked = await self.facts.probe(req.recording_id)
        if (
            asked is None
            or asked.job_id != req.job_id
            or asked.destination_id != req.destination_id
        ):
            raise Refusal(
                403,
                f"no destination test with job id {req.job_id} was requested for destination "
                f"{req.destination_id}",
                "no_attempt",
            )
        if asked.tenant_id != req.tenant_id:
            raise Refusal(403, "the destination test belongs to another tenant", "wrong_tenant")
        if now() > asked.occurred_at + timedelta(seconds=probes.wait_s(asked.timeout_s)):
            raise Refusal(
                410,
                f"destination test {req.recording_id} expired: the vault no longer waits for "
                "its answer",
                "no_attempt",
            )
        if asked.purpose == probes.ADD:
            row = await probes.pending(self.pool, req.tenant_id, req.destination_id)
        else:
            row = await self.rows.get(req.tenant_id, req.destination_id)
        if row is None:
            raise Refusal(
                404,
                f"destination {req.destination_id} does not exist (was it deleted, or its "
                "test given up?)",
                "no_destination",
            )
        return row

    async def _audit_refusal(self, req: GrantRequest, requester: str, reason: str) -> None:
        rid = req.recording_id if is_recording_id(req.recording_id) else "invalid"
        tenant = req.tenant_id if TENANT_ID_RE.match(req.tenant_id) else "invalid"
        await natsio.publish(
            self.js,
            vault_events.GrantRefused(
                # One audit entry per distinct request (a replay of the same bytes is one entry).
                event_id=event_id(
                    rid,
                    "grant_refused",
                    req.job_id,
                    req.destination_id,
                    req.public_key.hex(),
                    reason,
                ),
                recording_id=rid,
                tenant_id=tenant,
                occurred_at=now(),
                job_id=req.job_id[:MAX_JOB_ID],
                destination_id=req.destination_id[:64],
                requester=requester,
                reason=reason,
                probe=req.probe,
            ),
        )


def _check_shape(req: GrantRequest) -> None:
    if not is_recording_id(req.recording_id):
        raise Refusal(422, "recording_id is not a valid recording id", "bad_request")
    if not req.job_id or len(req.job_id) > MAX_JOB_ID or not req.job_id.isprintable():
        raise Refusal(422, "job_id must be 1 to 200 printable characters", "bad_request")
    if len(req.public_key) != 32:
        raise Refusal(422, "public_key must be a raw 32-byte X25519 public key", "bad_request")


def undecryptable(exc: Exception) -> Problem:
    why = (
        "its master key version is not configured"
        if isinstance(exc, crypto.UnknownKeyVersion)
        else "they failed authentication"
    )
    return Problem(
        status=500,
        message=f"the stored credentials of this destination could not be decrypted ({why}); "
        "restore the master keys or re-create the destination",
    )
