"""VAULT stream: the credential vault's audit trail. Never carries a secret."""

from __future__ import annotations

from .base import Event, StreamSpec

STREAM = StreamSpec(
    name="VAULT",
    prefix="vault",
    owner="credentials",
    description="Audit of credential grants and refusals (who, which job, when; never the secret).",
)


class GrantIssued(Event, frozen=True, kw_only=True, tag="vault.grant_issued"):
    job_id: str
    destination_id: str
    requester: str
    key_version: int = 0


class GrantRefused(Event, frozen=True, kw_only=True, tag="vault.grant_refused"):
    job_id: str
    destination_id: str
    requester: str
    reason: str


VaultEvent = GrantIssued | GrantRefused
EVENTS: tuple[type[Event], ...] = (GrantIssued, GrantRefused)
