"""RECORDINGS stream: what users asked for. Written by the API, read by every service."""

from __future__ import annotations

from .base import Event, StreamSpec

STREAM = StreamSpec(
    name="RECORDINGS",
    prefix="recordings",
    owner="api",
    description="Recording lifecycle requests from the API: started, stop requested, resend.",
)


class RecordingStarted(Event, frozen=True, kw_only=True, tag="recording.started"):
    destination_id: str
    destination_name: str
    # SHA-256 of the per-recording WHIP bearer token: the proxy checks tokens without ever
    # seeing them stored, and the token itself never enters the log.
    whip_token_sha256: str
    label: str = ""
    # What the destination wants from the transcoder: "webm" (as captured: VP8/Opus, H.264 in
    # Matroska) or "mp4" (H.264/AAC); and which tracks: "av", "audio" or "video".
    output_format: str = "webm"
    output_tracks: str = "av"


class RecordingStopRequested(Event, frozen=True, kw_only=True, tag="recording.stop_requested"):
    requested_by: str = "api"


class ResendRequested(Event, frozen=True, kw_only=True, tag="recording.resend_requested"):
    request_id: str
    destination_id: str
    destination_name: str


class WebhookRedeliveryRequested(
    Event, frozen=True, kw_only=True, tag="recording.webhook_redelivery_requested"
):
    """Someone asked (``webhooks redeliver``) to send one webhook delivery of this recording
    again; the notifier queues it anew with the same ``webhook-id`` and body."""

    request_id: str
    delivery_id: str
    endpoint_id: str
    requested_by: str = "api"


RecordingEvent = (
    RecordingStarted | RecordingStopRequested | ResendRequested | WebhookRedeliveryRequested
)
EVENTS: tuple[type[Event], ...] = (
    RecordingStarted,
    RecordingStopRequested,
    ResendRequested,
    WebhookRedeliveryRequested,
)
