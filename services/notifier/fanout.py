"""From the pipeline's events to queued deliveries: one ``webhook.queued`` per subscribed endpoint.

Durable consumers on RECORDINGS, TRANSCODES and UPLOADS feed ``Fanout.handle``. Each queued
delivery's id is derived from the endpoint and the event, so a handler run twice (a crash before
the ack, two notifiers) queues it once: JetStream drops the second publish by its
``Nats-Msg-Id``, and the delivery step folds any later copy into the first.

Order across streams: a recording's RECORDINGS events (started, resend requested) come before
whatever the other services did about them, but separate consumers may see them in any order.
So before it queues an upload or transcode event, the fan-out queues that recording's earlier
RECORDINGS events itself (again a no-op when they are queued already): what is queued for one
endpoint and one recording is in the order it happened.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import natsio
from shared.events import AnyEvent, Event, now, recordings, transcodes, uploads
from shared.events import webhooks as wh
from shared.webhook_bodies import body_of, data_of, delivery_id, redelivery_id, webhook_id
from shared.webhook_rpc import WebhookView

from . import metrics
from .endpoints import Endpoints, VaultUnavailable

log = logging.getLogger(__name__)

# What each stream's fan-out consumer reads.
SOURCES: dict[str, tuple[str, ...]] = {
    recordings.STREAM.name: ("started", "resend_requested", "webhook_redelivery_requested"),
    transcodes.STREAM.name: ("quarantined",),
    uploads.STREAM.name: ("uploaded", "retained", "failed", "backup_purged"),
}
CONSUMERS = {
    recordings.STREAM.name: natsio.ConsumerSpec(
        stream=recordings.STREAM,
        durable="notifier-recordings",
        filter_subjects=tuple(recordings.STREAM.filter(k) for k in SOURCES["RECORDINGS"]),
    ),
    transcodes.STREAM.name: natsio.ConsumerSpec(
        stream=transcodes.STREAM,
        durable="notifier-transcodes",
        filter_subjects=tuple(transcodes.STREAM.filter(k) for k in SOURCES["TRANSCODES"]),
    ),
    uploads.STREAM.name: natsio.ConsumerSpec(
        stream=uploads.STREAM,
        durable="notifier-uploads",
        filter_subjects=tuple(uploads.STREAM.filter(k) for k in SOURCES["UPLOADS"]),
    ),
}


class Fanout:
    def __init__(self, js: JetStreamContext, endpoints: Endpoints) -> None:
        self._js = js
        self._endpoints = endpoints

    async def handle(self, event: AnyEvent, msg: Msg) -> None:
        try:
            if isinstance(event, recordings.WebhookRedeliveryRequested):
                await self._redeliver(event)
                return
            if data_of(event) is None:
                return
            if not isinstance(event, recordings.RecordingEvent):
                await self._queue_earlier(event)
            await self._queue(event)
        except VaultUnavailable as exc:
            raise natsio.Retry(str(exc), delay=2.0) from None

    async def _queue(self, event: Event) -> int:
        mapped = data_of(event)
        if mapped is None:
            return 0
        webhook_type, data = mapped
        subscribed = await self._endpoints.subscribed(event.tenant_id, webhook_type)
        # An endpoint hears of what happened after it was added, not before.
        targets = [e for e in subscribed if e.created_at <= event.occurred_at]
        body = body_of(webhook_type, data, event.occurred_at)
        for endpoint in targets:
            ack = await natsio.publish(self._js, self._queued(event, endpoint, webhook_type, body))
            if not ack.duplicate:  # queued before: by us (an earlier event's turn) or a retry
                metrics.QUEUED.labels(webhook_type=webhook_type).inc()
        return len(targets)

    def _queued(
        self, event: Event, endpoint: WebhookView, webhook_type: str, body: str
    ) -> wh.DeliveryQueued:
        return wh.DeliveryQueued(
            event_id=delivery_id(endpoint.endpoint_id, event.event_id),
            recording_id=event.recording_id,
            tenant_id=event.tenant_id,
            occurred_at=now(),
            endpoint_id=endpoint.endpoint_id,
            webhook_id=webhook_id(endpoint.endpoint_id, event.event_id),
            webhook_type=webhook_type,
            source_event_id=event.event_id,
            body=body,
        )

    async def _queue_earlier(self, event: Event) -> None:
        history = await natsio.read_subject(
            self._js, recordings.STREAM, f"recordings.{event.recording_id}.>"
        )
        for _, earlier in history:
            if earlier.occurred_at <= event.occurred_at and data_of(earlier) is not None:
                await self._queue(earlier)

    async def _redeliver(self, request: recordings.WebhookRedeliveryRequested) -> None:
        subject = f"webhooks.{request.recording_id}.queued.{wh.endpoint_token(request.endpoint_id)}"
        found = [
            e
            for _, e in await natsio.read_subject(self._js, wh.STREAM, subject)
            if isinstance(e, wh.DeliveryQueued) and e.event_id == request.delivery_id
        ]
        if not found:
            raise natsio.Reject(
                f"no webhook delivery {request.delivery_id} of recording "
                f"{request.recording_id} to endpoint {request.endpoint_id}"
            )
        original = found[0]
        if original.tenant_id != request.tenant_id:
            raise natsio.Reject("the delivery belongs to another tenant")
        again = wh.DeliveryQueued(
            event_id=redelivery_id(original.event_id, request.request_id),
            recording_id=original.recording_id,
            tenant_id=original.tenant_id,
            occurred_at=now(),
            endpoint_id=original.endpoint_id,
            webhook_id=original.webhook_id,
            webhook_type=original.webhook_type,
            source_event_id=original.source_event_id,
            body=original.body,
            redelivery_of=original.redelivery_of or original.event_id,
        )
        await natsio.publish(self._js, again)
        log.info(
            "redelivery queued",
            extra={"delivery_id": again.event_id, "redelivery_of": original.event_id},
        )
