"""Deliver one queued webhook: fold its log, decide, attempt, and write down what happened.

Everything that decides is in the stream (``policy.fold``/``decide``): the attempt count, when
the next attempt is due, whether an earlier event of the same recording still waits for this
endpoint. So a delivery redelivered to another notifier after a kill -9 continues where the
log says, with the same ``webhook-id``: at least once, never with a second id. Each attempt's
event is published before the message is acked; the receiver deduplicates a repeat that a
crash between its 2xx and our event may cause.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import natsio
from shared.events import AnyEvent, event_id, now
from shared.events import webhooks as wh

from . import metrics, policy
from .endpoints import Endpoints, VaultUnavailable
from .secret_lease import SecretLeases, SecretsUnavailable
from .sender import Outcome, Sender

log = logging.getLogger(__name__)

CONSUMER_NAME = "notifier-deliveries"
BUSY_WAIT_S = 1.0  # an endpoint at its concurrency limit: look again after this


def consumer_spec(ack_wait_s: float) -> natsio.ConsumerSpec:
    return natsio.ConsumerSpec(
        stream=wh.STREAM,
        durable=CONSUMER_NAME,
        filter_subjects=(wh.STREAM.filter("queued") + ".*",),
        ack_wait_s=ack_wait_s,
        # Deliveries waiting for a retry stay pending (nak with a delay) for up to the policy's
        # days: room for many, so a dead receiver's backlog cannot starve the live ones.
        max_ack_pending=100_000,
    )


def _pair_subject(queued: wh.DeliveryQueued) -> str:
    return f"webhooks.{queued.recording_id}.*.{wh.endpoint_token(queued.endpoint_id)}"


class Deliverer:
    def __init__(
        self,
        js: JetStreamContext,
        endpoints: Endpoints,
        leases: SecretLeases,
        sender: Sender,
        retry: policy.RetryPolicy,
        *,
        endpoint_concurrency: int,
    ) -> None:
        self._js = js
        self._endpoints = endpoints
        self._leases = leases
        self._sender = sender
        self._retry = retry
        self._per_endpoint = endpoint_concurrency
        self._in_flight: dict[str, int] = {}

    async def handle(self, event: AnyEvent, msg: Msg) -> None:
        if not isinstance(event, wh.DeliveryQueued):
            raise natsio.Reject(f"not a queued webhook delivery: {type(event).__name__}")
        pair = policy.fold(await natsio.read_subject(self._js, wh.STREAM, _pair_subject(event)))
        decision = policy.decide(pair, event.event_id, now())
        if isinstance(decision, policy.Done):
            return
        if isinstance(decision, policy.Wait):
            raise natsio.Retry(decision.why, delay=decision.delay_s)
        if self._in_flight.get(event.endpoint_id, 0) >= self._per_endpoint:
            raise natsio.Retry(
                "the endpoint has as many deliveries in flight as allowed",
                delay=BUSY_WAIT_S * (0.5 + random.random()),  # noqa: S311 (jitter)
            )
        self._in_flight[event.endpoint_id] = self._in_flight.get(event.endpoint_id, 0) + 1
        try:
            await self._attempt(event, pair.deliveries[event.event_id], decision.number)
        finally:
            left = self._in_flight[event.endpoint_id] - 1
            if left:
                self._in_flight[event.endpoint_id] = left
            else:
                del self._in_flight[event.endpoint_id]

    async def _attempt(
        self, queued: wh.DeliveryQueued, state: policy.DeliveryState, number: int
    ) -> None:
        try:
            endpoint = await self._endpoints.get(queued.tenant_id, queued.endpoint_id)
        except VaultUnavailable as exc:
            raise natsio.Retry(str(exc), delay=2.0) from None
        if endpoint is None:
            await self._give_up(queued, number - 1, "the endpoint was removed")
            return
        if not endpoint.enabled:
            await self._give_up(
                queued, number - 1, f"the endpoint is disabled: {endpoint.disabled_reason}"
            )
            return
        try:
            secrets = await self._leases.get(queued.tenant_id, queued.endpoint_id)
        except SecretsUnavailable as exc:
            if exc.status in (404, 410):
                await self._give_up(queued, number - 1, str(exc))
                return
            raise natsio.Retry(str(exc), delay=2.0) from None
        outcome = await self._sender.send(endpoint.url, queued.body, queued.webhook_id, secrets)
        metrics.ATTEMPT_SECONDS.observe(outcome.latency_ms / 1000)
        if outcome.delivered:
            await self._record(queued, number, outcome, None)
            await natsio.publish(
                self._js,
                wh.DeliveryDelivered(
                    **_ids(queued, "delivered"),
                    delivery_id=queued.event_id,
                    webhook_id=queued.webhook_id,
                    attempts=number,
                    status=outcome.status,
                ),
            )
            metrics.ATTEMPTS.labels(outcome="delivered").inc()
            return
        if outcome.gone:
            await self._record(queued, number, outcome, None)
            await self._disable(queued)
            await self._give_up(queued, number, "the receiver answered 410 Gone")
            return
        at = policy.next_attempt(state, number, now(), self._retry, random.random())  # noqa: S311
        await self._record(queued, number, outcome, at)
        if at is None:
            await self._give_up(
                queued,
                number,
                f"no success in {number} attempts over the retry policy "
                f"({self._retry.give_up_after_s:.0f} s); last: {_said(outcome)}",
            )
            return
        metrics.ATTEMPTS.labels(outcome="retry").inc()
        raise natsio.Retry(
            f"attempt {number} failed: {_said(outcome)}",
            delay=max((at - now()).total_seconds(), policy.MIN_WAIT_S),
        )

    async def _record(
        self, queued: wh.DeliveryQueued, number: int, outcome: Outcome, at: datetime | None
    ) -> None:
        await natsio.publish(
            self._js,
            wh.DeliveryAttempted(
                **_ids(queued, "attempted", number),
                delivery_id=queued.event_id,
                webhook_id=queued.webhook_id,
                attempt=number,
                status=outcome.status,
                latency_ms=outcome.latency_ms,
                error=outcome.error or ("" if outcome.delivered else f"HTTP {outcome.status}"),
                next_attempt_at=at,
            ),
        )

    async def _give_up(self, queued: wh.DeliveryQueued, attempts: int, reason: str) -> None:
        await natsio.publish(
            self._js,
            wh.DeliveryGaveUp(
                **_ids(queued, "gave_up"),
                delivery_id=queued.event_id,
                webhook_id=queued.webhook_id,
                attempts=attempts,
                reason=reason[:1000],
            ),
        )
        metrics.ATTEMPTS.labels(outcome="gave_up").inc()
        log.warning(
            "webhook delivery given up",
            extra={
                "delivery_id": queued.event_id,
                "endpoint_id": queued.endpoint_id,
                "reason": reason[:200],
            },
        )

    async def _disable(self, queued: wh.DeliveryQueued) -> None:
        reason = "the receiver answered 410 Gone"
        self._leases.drop(queued.endpoint_id)
        try:
            await self._endpoints.disable(queued.tenant_id, queued.endpoint_id, reason)
        except VaultUnavailable as exc:
            raise natsio.Retry(str(exc), delay=2.0) from None
        await natsio.publish(
            self._js,
            wh.EndpointDisabled(
                **_ids(queued, "endpoint_disabled"),
                delivery_id=queued.event_id,
                reason=reason,
            ),
        )


def _ids(queued: wh.DeliveryQueued, what: str, *parts: object) -> dict[str, Any]:
    return {
        "event_id": event_id(queued.event_id, what, *parts),
        "recording_id": queued.recording_id,
        "tenant_id": queued.tenant_id,
        "occurred_at": now(),
        "endpoint_id": queued.endpoint_id,
    }


def _said(outcome: Outcome) -> str:
    return outcome.error or f"HTTP {outcome.status}"


async def sweep_leases(leases: SecretLeases, every_s: float) -> None:
    """Drop secrets whose job ended even when no delivery comes to replace them."""
    while True:
        await asyncio.sleep(every_s)
        leases.drop_expired()
