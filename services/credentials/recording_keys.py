"""Recording data keys: issued to one job at a time, destroyed when the backup is purged.

The proxy, the transcoder and the uploader each ask for a recording's key per job, as the
uploader asks for a grant: a fresh X25519 key per request, the reply sealed to it, checked against
the event log (the recording was started, for this tenant, and its backup not purged), audited
before the reply (``vault.recording_key_issued``, once per job: the first message on the job's
subject), and the key wiped from the vault's buffers once sealed. The first request of a
recording makes its key (``reckeys.get_or_insert``: one key even if two vaults race).

Shredding: the vault follows ``upload.backup_purged`` with a durable consumer and deletes the
recording's wrapped key, then audits ``vault.recording_key_destroyed``; a request after that is
refused (410) whatever the database says, since the log is checked first.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import natsio, sealedbox
from shared.events import AnyEvent, event_id, now
from shared.events import uploads as up_events
from shared.events import vault as vault_events
from shared.ids import TENANT_ID_RE, is_recording_id
from shared.vault_rpc import (
    RECORDING_KEY_PURPOSES,
    Problem,
    RecordingKeyReply,
    RecordingKeyRequest,
    recording_key_context,
)

from . import aead, crypto, reckeys
from .deferred import after_reply
from .facts import Facts
from .keys import KeyRing

log = logging.getLogger(__name__)

MAX_JOB_ID = 200


@dataclass
class KeyRefusal(Exception):
    status: int
    reason: str


@dataclass
class RecordingKeys:
    ring: KeyRing
    pool: asyncpg.Pool
    js: JetStreamContext
    facts: Facts

    async def issue(self, req: RecordingKeyRequest, requester: str) -> RecordingKeyReply:
        try:
            return await self._issue(req, requester)
        except KeyRefusal as refusal:
            await self._audit_refusal(req, requester, refusal.reason)
            log.log(
                logging.ERROR if refusal.status >= 500 else logging.WARNING,
                "recording key refused",
                extra={
                    "recording_id": req.recording_id[:64],
                    "job_id": req.job_id[:MAX_JOB_ID],
                    "purpose": req.purpose[:32],
                    "requester": requester,
                    "reason": refusal.reason,
                },
            )
            return RecordingKeyReply(problem=Problem(status=refusal.status, message=refusal.reason))

    async def _issue(self, req: RecordingKeyRequest, requester: str) -> RecordingKeyReply:
        await self._check(req)
        keys = self.ring.current()
        try:
            row, created = await reckeys.get_or_insert(
                self.pool,
                req.recording_id,
                lambda: reckeys.new_wrapped_key(keys, req.tenant_id, req.recording_id),
            )
        except LookupError:
            raise KeyRefusal(410, self._shredded(req.recording_id)) from None
        if row.tenant_id != req.tenant_id:  # the log said this tenant: the row was moved
            raise KeyRefusal(500, "the stored key of this recording names another tenant")
        data_key: bytearray | None = None
        try:
            data_key = reckeys.unwrap(keys, row)
            sealed = sealedbox.seal(
                req.public_key,
                bytes(data_key),
                recording_key_context(req.recording_id, req.job_id),
            )
        except (aead.AeadError, crypto.UnknownKeyVersion) as exc:
            why = (
                "its master key version is not configured"
                if isinstance(exc, crypto.UnknownKeyVersion)
                else "it failed authentication"
            )
            raise KeyRefusal(
                500,
                f"the data key of recording {req.recording_id} could not be unwrapped ({why}); "
                "restore the master keys",
            ) from None
        except sealedbox.SealError as exc:
            raise KeyRefusal(422, f"public_key: {exc}") from None
        finally:
            if data_key is not None:
                aead.wipe(data_key)
        issued = vault_events.RecordingKeyIssued(
            event_id=event_id(req.recording_id, "recording_key_issued", secrets.token_hex(16)),
            recording_id=req.recording_id,
            tenant_id=req.tenant_id,
            occurred_at=now(),
            job_id=req.job_id,
            purpose=req.purpose,
            requester=requester,
            key_version=row.key_version,
            created=created,
        )
        try:
            await natsio.publish(self.js, issued, first_on_subject=True)
        except natsio.SubjectTaken:
            raise KeyRefusal(
                409, f"job {req.job_id} was already given this recording's key; use a new job id"
            ) from None
        done = {
            "recording_id": req.recording_id,
            "job_id": req.job_id,
            "purpose": req.purpose,
            "requester": requester,
            "created": created,
        }
        after_reply(lambda: log.info("recording key issued", extra=done))
        return RecordingKeyReply(sealed=sealed, key_version=row.key_version)

    async def _check(self, req: RecordingKeyRequest) -> None:
        if not is_recording_id(req.recording_id):
            raise KeyRefusal(422, "recording_id is not a valid recording id")
        if not TENANT_ID_RE.match(req.tenant_id):
            raise KeyRefusal(422, "tenant_id is not a valid tenant id")
        if not req.job_id or len(req.job_id) > MAX_JOB_ID or not req.job_id.isprintable():
            raise KeyRefusal(422, "job_id must be 1 to 200 printable characters")
        if req.purpose not in RECORDING_KEY_PURPOSES:
            raise KeyRefusal(422, f"purpose must be one of {', '.join(RECORDING_KEY_PURPOSES)}")
        if len(req.public_key) != 32:
            raise KeyRefusal(422, "public_key must be a raw 32-byte X25519 public key")
        rid = req.recording_id
        started = await self.facts.started(rid)
        if started is None:
            raise KeyRefusal(404, f"recording {rid} was never started; it has no key")
        if started.tenant_id != req.tenant_id:
            raise KeyRefusal(403, f"recording {rid} does not belong to the requesting tenant")
        if await self.facts.purged(rid):
            raise KeyRefusal(410, self._shredded(rid))

    @staticmethod
    def _shredded(rid: str) -> str:
        return (
            f"recording {rid}'s backup was purged and its data key destroyed; "
            "nothing can read it any more"
        )

    async def _audit_refusal(self, req: RecordingKeyRequest, requester: str, reason: str) -> None:
        rid = req.recording_id if is_recording_id(req.recording_id) else "invalid"
        tenant = req.tenant_id if TENANT_ID_RE.match(req.tenant_id) else "invalid"
        await natsio.publish(
            self.js,
            vault_events.RecordingKeyRefused(
                event_id=event_id(
                    rid, "recording_key_refused", req.job_id, req.public_key.hex(), reason
                ),
                recording_id=rid,
                tenant_id=tenant,
                occurred_at=now(),
                job_id=req.job_id[:MAX_JOB_ID],
                purpose=req.purpose[:32],
                requester=requester,
                reason=reason,
            ),
        )

    # -- shredding ------------------------------------------------------------------------------
    async def on_purged(self, event: up_events.BackupPurged) -> None:
        """Destroy the recording's data key. Idempotent: a redelivery finds no row, and the audit
        entry, once stored, is not written again (its id is the fact's, and the subject is read
        first, since JetStream's duplicate window is only minutes)."""
        rid = event.recording_id
        existed = await reckeys.delete(self.pool, rid)
        subject = f"{vault_events.STREAM.prefix}.{rid}.recording_key_destroyed"
        if await natsio.last_event(self.js, vault_events.STREAM, subject) is not None:
            return
        await natsio.publish(
            self.js,
            vault_events.RecordingKeyDestroyed(
                event_id=event_id(rid, "recording_key_destroyed"),
                recording_id=rid,
                tenant_id=event.tenant_id,
                occurred_at=now(),
                reason="backup purged",
                existed=existed,
            ),
        )
        log.info(
            "recording key destroyed",
            extra={"recording_id": rid, "existed": existed},
        )


PURGE_CONSUMER = natsio.ConsumerSpec(
    stream=up_events.STREAM,
    durable="vault-shred",
    filter_subjects=(up_events.STREAM.filter("backup_purged"),),
)


def purge_handler(keys: RecordingKeys) -> natsio.Handler:
    async def handle(event: AnyEvent, msg: Msg) -> None:
        if isinstance(event, up_events.BackupPurged):
            await keys.on_purged(event)

    return handle
