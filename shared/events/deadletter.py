"""DEADLETTER stream: messages a consumer could not decode or handle, with the reason.

Not an ``Event``: a dead letter may have no valid recording id. The original bytes are kept so
an operator can repair and republish them.
"""

from __future__ import annotations

import msgspec

from .base import StreamSpec

STREAM = StreamSpec(
    name="DEADLETTER",
    prefix="deadletter",
    owner="any consumer",
    description="Undecodable or unprocessable messages, with the consumer, reason and raw bytes.",
)


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="deadletter"):
    stream: str
    subject: str
    stream_seq: int
    consumer: str
    reason: str
    data: str  # original payload, decoded as UTF-8 with replacement (events are JSON text)
    schema_version: int = 1


def subject_for(stream: str) -> str:
    return f"{STREAM.prefix}.{stream.lower()}"
