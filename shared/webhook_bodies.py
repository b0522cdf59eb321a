"""What a receiver is told: the webhook body of each event that has one. Pure: no I/O.

A body is ``{"type", "timestamp", "data"}`` (the Standard Webhooks shape); ``timestamp`` is when
the event happened (not when it was sent: that is the ``webhook-timestamp`` header). ``data``
always names the recording and the tenant. Nothing here ever holds a secret: events have none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from .events import Event, event_id, recordings, transcodes, uploads

MANIFEST_NAMES = ("manifest.json", "manifest.json.age")


class RemoteFileBody(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    size: int
    sha256: str
    checksum_algorithm: str
    checksum: str
    uri: str


class WebhookBody(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    timestamp: datetime
    data: dict[str, Any]


# Each webhook type's ``data``: the JSON Schemas exported with the events are made from these.
class StartedData(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    tenant_id: str
    label: str
    destination: str


class UploadedData(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    tenant_id: str
    destination_id: str
    files: list[RemoteFileBody]
    manifest: RemoteFileBody | None  # also in ``files``: the signed list of every file


class ReasonData(msgspec.Struct, frozen=True, kw_only=True):
    """``recording.retained``, ``recording.quarantined``."""

    recording_id: str
    tenant_id: str
    reason: str


class FailedData(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    tenant_id: str
    destination_id: str
    reason: str
    will_retry: bool


class ResentData(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    tenant_id: str
    request_id: str
    destination: str


class PurgedData(msgspec.Struct, frozen=True, kw_only=True):
    recording_id: str
    tenant_id: str
    bytes_freed: int
    files: int


DATA_OF_TYPE: dict[str, type[msgspec.Struct]] = {
    "recording.started": StartedData,
    "recording.uploaded": UploadedData,
    "recording.retained": ReasonData,
    "recording.failed": FailedData,
    "recording.resent": ResentData,
    "recording.quarantined": ReasonData,
    "backup.purged": PurgedData,
}


def _file(f: uploads.RemoteFile) -> RemoteFileBody:
    return RemoteFileBody(
        name=f.name,
        size=f.size,
        sha256=f.sha256,
        checksum_algorithm=f.checksum_algorithm,
        checksum=f.checksum,
        uri=f.uri,
    )


def data_of(event: Event) -> tuple[str, msgspec.Struct] | None:
    """The webhook type and data of ``event``, or None when receivers are not told of it."""
    ids = {"recording_id": event.recording_id, "tenant_id": event.tenant_id}
    match event:
        case recordings.RecordingStarted():
            return "recording.started", StartedData(
                **ids, label=event.label, destination=event.destination_name
            )
        case uploads.RecordingUploaded():
            files = [_file(f) for f in event.files]
            manifest = next((f for f in files if f.name in MANIFEST_NAMES), None)
            return "recording.uploaded", UploadedData(
                **ids, destination_id=event.destination_id, files=files, manifest=manifest
            )
        case uploads.RecordingRetained():
            return "recording.retained", ReasonData(**ids, reason=event.reason)
        case uploads.UploadFailed():
            return "recording.failed", FailedData(
                **ids,
                destination_id=event.destination_id,
                reason=event.reason,
                will_retry=event.will_retry,
            )
        case recordings.ResendRequested():
            return "recording.resent", ResentData(
                **ids, request_id=event.request_id, destination=event.destination_name
            )
        case transcodes.RecordingQuarantined():
            return "recording.quarantined", ReasonData(**ids, reason=event.reason)
        case uploads.BackupPurged():
            return "backup.purged", PurgedData(
                **ids, bytes_freed=event.bytes_freed, files=event.files
            )
    return None


def body_of(webhook_type: str, data: msgspec.Struct, happened_at: datetime) -> str:
    """The exact JSON sent (and signed) for one event."""
    body = WebhookBody(type=webhook_type, timestamp=happened_at, data=msgspec.to_builtins(data))
    return msgspec.json.encode(body).decode()


def delivery_id(endpoint_id: str, source_event_id: str) -> str:
    """The id of the first delivery of an event to an endpoint (the queued event's id)."""
    return event_id("webhook", endpoint_id, source_event_id)


def webhook_id(endpoint_id: str, source_event_id: str) -> str:
    """The ``webhook-id`` header: one per event and endpoint, the same on every retry."""
    return "msg_" + event_id("webhook-id", endpoint_id, source_event_id)


def redelivery_id(original: str, request_id: str) -> str:
    return event_id("webhook-redelivery", original, request_id)
