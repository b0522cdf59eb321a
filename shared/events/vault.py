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
        "first message: one grant per job."
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


VaultEvent = GrantIssued | GrantRefused
EVENTS: tuple[type[Event], ...] = (GrantIssued, GrantRefused)
