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
    probe: bool = False  # a destination test's job (``ProbeRequested``), not an upload's

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
    probe: bool = False


class ProbeRequested(Event, frozen=True, kw_only=True, tag="vault.probe_requested"):
    """The vault asks an uploader to test a destination (write, confirm and delete a test
    object): the one fact a probe's grant is checked against. ``recording_id`` is the probe's own
    id (a fresh ``rec_`` id that names no recording; the test object's key uses it), so the
    request is on ``vault.<probe id>.probe_requested`` and its grant, once only, on
    ``vault.<probe id>.grant_issued.<job token>``. The uploader answers with
    ``upload.probe_finished``."""

    job_id: str
    destination_id: str
    provider: str
    # "add": the destination is stored only if it passes (until then its row is pending, and no
    # upload can be granted it); "test": a stored destination (``destinations test``).
    purpose: str
    timeout_s: float  # how long the write, confirm and delete may take in all


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


class WebhookSecretIssued(Event, frozen=True, kw_only=True, tag="vault.webhook_secret_issued"):
    """A webhook endpoint's signing secrets were sealed to a notifier's sending job (never the
    secrets). ``recording_id`` is the endpoint's id: these name no recording. Once per job, like
    ``GrantIssued``: the first message on the job's subject."""

    job_id: str
    endpoint_id: str
    requester: str
    secrets: int  # how many were handed (2 during a rotation)

    def subject_tail(self) -> str:
        return job_token(self.job_id)


class WebhookSecretRefused(Event, frozen=True, kw_only=True, tag="vault.webhook_secret_refused"):
    job_id: str
    endpoint_id: str
    requester: str
    reason: str


class WebhookChanged(Event, frozen=True, kw_only=True, tag="vault.webhook_changed"):
    """An endpoint was created, removed, had its secret rotated, or was disabled (the audit
    trail; ``recording_id`` is the endpoint's id). Never the URL's query or a secret."""

    endpoint_id: str
    change: str  # "created", "removed", "rotated", "disabled"
    detail: str = ""


VaultEvent = (
    GrantIssued
    | GrantRefused
    | RecordingKeyIssued
    | RecordingKeyRefused
    | RecordingKeyDestroyed
    | ProbeRequested
    | WebhookSecretIssued
    | WebhookSecretRefused
    | WebhookChanged
)
EVENTS: tuple[type[Event], ...] = (
    GrantIssued,
    GrantRefused,
    RecordingKeyIssued,
    RecordingKeyRefused,
    RecordingKeyDestroyed,
    ProbeRequested,
    WebhookSecretIssued,
    WebhookSecretRefused,
    WebhookChanged,
)

# VAULT events that name a webhook endpoint, not a recording (the read model skips them).
WEBHOOK_EVENTS: tuple[type[Event], ...] = (
    WebhookSecretIssued,
    WebhookSecretRefused,
    WebhookChanged,
)
