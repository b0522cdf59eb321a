"""When to send, wait, or give up: pure decisions over one endpoint's log for one recording.

The notifier folds ``webhooks.<rid>.*.<endpoint token>`` (every delivery of the recording's
events to that endpoint, their attempts and outcomes) before each attempt. What it decides
depends on that log and the clock only, so any notifier, on any machine, after any crash,
decides the same: the log is the state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.events import Event
from shared.events import webhooks as wh

MAX_WAIT_S = 3600.0  # a waiting delivery looks again at least this often (nak delay)
MIN_WAIT_S = 0.2


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 5.0
    max_s: float = 6 * 3600.0
    give_up_after_s: float = 3 * 24 * 3600.0
    jitter: float = 0.2  # each delay is scaled by a factor in [1 - jitter, 1 + jitter]

    def delay_s(self, attempt: int, rand: float) -> float:
        """The wait after failed attempt number ``attempt`` (1-based); ``rand`` in [0, 1)."""
        raw = min(self.base_s * 2.0 ** max(attempt - 1, 0), self.max_s)
        return raw * (1 - self.jitter + 2 * self.jitter * rand)


@dataclass
class DeliveryState:
    delivery_id: str
    seq: int
    queued: wh.DeliveryQueued
    attempts: int = 0
    last_status: int = 0
    next_attempt_at: datetime | None = None
    outcome: str = ""  # "", "delivered" or "gave_up"

    @property
    def finished(self) -> bool:
        return bool(self.outcome)


@dataclass
class PairLog:
    """One endpoint's deliveries of one recording, folded."""

    deliveries: dict[str, DeliveryState] = field(default_factory=dict)
    disabled: bool = False


def fold(events: Iterable[tuple[int, Event]]) -> PairLog:
    log = PairLog()
    for seq, event in events:
        match event:
            case wh.DeliveryQueued():
                log.deliveries.setdefault(event.event_id, DeliveryState(event.event_id, seq, event))
            case wh.DeliveryAttempted():
                state = log.deliveries.get(event.delivery_id)
                if state is not None:
                    state.attempts = max(state.attempts, event.attempt)
                    state.last_status = event.status
                    state.next_attempt_at = event.next_attempt_at
            case wh.DeliveryDelivered():
                if (state := log.deliveries.get(event.delivery_id)) is not None:
                    state.outcome = "delivered"
            case wh.DeliveryGaveUp():
                if (state := log.deliveries.get(event.delivery_id)) is not None:
                    state.outcome = "gave_up"
            case wh.EndpointDisabled():
                log.disabled = True
    return log


@dataclass(frozen=True)
class Done:
    """Already delivered or given up: nothing to send (a redelivered message, a replay)."""


@dataclass(frozen=True)
class Wait:
    delay_s: float
    why: str


@dataclass(frozen=True)
class Attempt:
    number: int  # 1-based


Decision = Done | Wait | Attempt


def decide(log: PairLog, delivery_id: str, now: datetime) -> Decision:
    state = log.deliveries.get(delivery_id)
    if state is None:
        return Wait(1.0, "the delivery is not in the log yet")
    if state.finished:
        return Done()
    earlier = [s for s in log.deliveries.values() if s.seq < state.seq and not s.finished]
    if earlier:
        first = min(earlier, key=lambda s: s.seq)
        return Wait(
            _until(first.next_attempt_at, now, default=1.0),
            f"an earlier event of this recording ({first.delivery_id}) is not delivered yet",
        )
    if state.next_attempt_at is not None and state.next_attempt_at > now:
        return Wait(_until(state.next_attempt_at, now, default=1.0), "backing off")
    return Attempt(state.attempts + 1)


def next_attempt(
    state: DeliveryState, attempt: int, now: datetime, policy: RetryPolicy, rand: float
) -> datetime | None:
    """When to try again after failed attempt ``attempt``, or None: give up (past the policy)."""
    at = now + timedelta(seconds=policy.delay_s(attempt, rand))
    deadline = state.queued.occurred_at + timedelta(seconds=policy.give_up_after_s)
    return None if at > deadline else at


def _until(when: datetime | None, now: datetime, *, default: float) -> float:
    if when is None:
        return default
    return min(max((when - now).total_seconds(), MIN_WAIT_S), MAX_WAIT_S)
