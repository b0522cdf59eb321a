"""Event contracts: one module per JetStream stream, one decoder for all of them.

Usage::

    from shared.events import decode, encode, stream_of
    event = decode(msg.data)        # raises msgspec.ValidationError / DecodeError on bad input
"""

from __future__ import annotations

import msgspec

from . import captures, deadletter, recordings, transcodes, uploads, vault, webhooks
from .base import Event, StreamSpec, event_id, now

STREAMS: tuple[StreamSpec, ...] = (
    recordings.STREAM,
    captures.STREAM,
    transcodes.STREAM,
    uploads.STREAM,
    vault.STREAM,
    webhooks.STREAM,
    deadletter.STREAM,
)

AnyEvent = (
    recordings.RecordingEvent
    | captures.CaptureEvent
    | transcodes.TranscodeEvent
    | uploads.UploadEvent
    | vault.VaultEvent
    | webhooks.WebhookEvent
)

EVENT_TYPES: tuple[type[Event], ...] = (
    *recordings.EVENTS,
    *captures.EVENTS,
    *transcodes.EVENTS,
    *uploads.EVENTS,
    *vault.EVENTS,
    *webhooks.EVENTS,
)

_STREAM_OF: dict[type[Event], StreamSpec] = {
    **{t: recordings.STREAM for t in recordings.EVENTS},
    **{t: captures.STREAM for t in captures.EVENTS},
    **{t: transcodes.STREAM for t in transcodes.EVENTS},
    **{t: uploads.STREAM for t in uploads.EVENTS},
    **{t: vault.STREAM for t in vault.EVENTS},
    **{t: webhooks.STREAM for t in webhooks.EVENTS},
}

_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()


def decode(data: bytes) -> AnyEvent:
    return _decoder.decode(data)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def stream_of_type(event_type: type[Event]) -> StreamSpec:
    return _STREAM_OF[event_type]


def stream_of(event: Event) -> StreamSpec:
    return _STREAM_OF[type(event)]


def subject_of(event: Event) -> str:
    return stream_of(event).subject(event)


def tag_of(event_type: type[Event]) -> str:
    tag = event_type.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


__all__ = [
    "EVENT_TYPES",
    "STREAMS",
    "AnyEvent",
    "Event",
    "StreamSpec",
    "decode",
    "encode",
    "event_id",
    "now",
    "stream_of",
    "stream_of_type",
    "subject_of",
    "tag_of",
]
