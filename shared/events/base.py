"""The envelope every event shares, and how it maps to a NATS subject and message id.

Events are frozen, kw_only msgspec Structs tagged with a stable ``type``; a tag is never reused or
changed. New fields are added with defaults, so older messages still decode.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    # gc=False: an event holds only values, never a cycle, so the cyclic collector need not walk
    # the many that services keep in memory (the vault's facts, folded histories).
    # Deterministic: derived from the fact the event records, so a retried publish carries the
    # same id and JetStream drops it as a duplicate (it is also the Nats-Msg-Id).
    event_id: str
    recording_id: str
    tenant_id: str
    occurred_at: datetime
    schema_version: int = 1

    def subject_tail(self) -> str:
        """Subject tokens after the kind: none for most events (see ``StreamSpec.subject``)."""
        return ""


def subject_kind(event: Event) -> str:
    """The tag's last part, used as the last subject token (``captures.<rid>.<kind>``).

    A function, not a property: some events have a field named ``kind`` (audio/video).
    """
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag.rsplit(".", 1)[1]


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream: its name, the subject prefix it owns, and the service that writes it."""

    name: str
    prefix: str
    owner: str
    description: str

    @property
    def subjects(self) -> list[str]:
        return [f"{self.prefix}.>"]

    def subject(self, event: Event) -> str:
        head = f"{self.prefix}.{event.recording_id}.{subject_kind(event)}"
        tail = event.subject_tail()
        return f"{head}.{tail}" if tail else head

    def filter(self, kind: str = "*", recording_id: str = "*") -> str:
        return f"{self.prefix}.{recording_id}.{kind}"


def now() -> datetime:
    return datetime.now(UTC)


def event_id(*parts: object) -> str:
    """A stable id for the fact named by ``parts`` (short enough for Nats-Msg-Id and logs)."""
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:32]
