"""VAULT stream: the credential vault's audit trail. Never carries a secret."""

from __future__ import annotations

import hashlib

from .base import Event, StreamSpec

STREAM = StreamSpec(
    name="VAULT",
    prefix="vault",
    owner="credentials",
    description=(
        "Audit of credential grants and refusals (who, which job, when; never the secret). "
        "A grant is on vault.<rid>.grant_issued.<job token>, stored only as that subject's "
        "first message: one grant per job. Recording data keys the same way: "
        "vault.<rid>.recording_key_issued.<job token>, and their destruction on purge."
    ),
)


def job_token(job_id: str) -> str:
    """A subject token for ``job_id`` (which may hold dots, spaces or wildcards)."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:32]


class GrantIssued(Event, frozen=True, kw_only=True, tag="vault.grant_issued"):
    """Unlike other events, its id is the granting request's own (random), not the fact's: the
    job's subject is what makes it once-only, and the id tells the vault's own stored copy from
    another request's (``natsio.publish`` with ``first_on_subject``)."""

    job_id: str
    destination_id: str
    requester: str
    key_version: int = 0

    def subject_tail(self) -> str:
        # One subject per job (vault.<rid>.grant_issued.<job token>): the vault publishes each
        # grant as the first message on its subject, so the stream itself refuses a second grant
        # of a job, for as long as the audit trail is kept.
        return job_token(self.job_id)


class GrantRefused(Event, frozen=True, kw_only=True, tag="vault.grant_refused"):
    job_id: str
    destination_id: str
    requester: str
    reason: str


class RecordingKeyIssued(Event, frozen=True, kw_only=True, tag="vault.recording_key_issued"):
    """A recording's data key was sealed to a job (never the key). Like ``GrantIssued``, its id is
    the request's own and its subject the job's, so one job gets the key once."""

    job_id: str
    purpose: str
    requester: str
    key_version: int
    created: bool = False  # this request made the recording's key

    def subject_tail(self) -> str:
        return job_token(self.job_id)


class RecordingKeyRefused(Event, frozen=True, kw_only=True, tag="vault.recording_key_refused"):
    job_id: str
    purpose: str
    requester: str
    reason: str


class RecordingKeyDestroyed(Event, frozen=True, kw_only=True, tag="vault.recording_key_destroyed"):
    """The recording's data key was deleted (crypto-shredding): every copy of its backup,
    wherever it survives, is unreadable from now on."""

    reason: str
    existed: bool = True  # False: there was no key to delete (never issued, or already gone)


VaultEvent = (
    GrantIssued | GrantRefused | RecordingKeyIssued | RecordingKeyRefused | RecordingKeyDestroyed
)
EVENTS: tuple[type[Event], ...] = (
    GrantIssued,
    GrantRefused,
    RecordingKeyIssued,
    RecordingKeyRefused,
    RecordingKeyDestroyed,
)
