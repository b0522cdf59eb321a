"""The event-log facts a grant is checked against, kept warm in memory.

A grant needs three facts: the recording was started (for which tenant and destination), a
resend named another destination (when the job is for one), and the upload job was announced.
Stored events never change, so a copy of one is as good as the log: ordered consumers copy new
ones into bounded memory as JetStream stores them, and whatever is not (or no longer) there is
read from the stream. A missing copy only costs a round trip; it can never grant anything the
log would not. A destination test's grant needs one fact of the vault's own instead: its
``vault.probe_requested``.
"""

from __future__ import annotations

import contextlib

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from shared import natsio
from shared.events import decode
from shared.events import recordings as rec_events
from shared.events import uploads as up_events
from shared.events import vault as vault_events

from .bounded import Bounded

DEFAULT_CAPACITY = 65536  # per kind; a few hundred bytes each


class Facts:
    """Look-ups of the facts a grant needs: memory first, then the stream."""

    def __init__(self, js: JetStreamContext, capacity: int = DEFAULT_CAPACITY) -> None:
        self._js = js
        self._started: Bounded[str, rec_events.RecordingStarted] = Bounded(capacity)
        self._jobs: Bounded[str, up_events.UploadAttemptStarted] = Bounded(capacity)
        self._resends: Bounded[tuple[str, str], rec_events.ResendRequested] = Bounded(capacity)
        self._purged: Bounded[str, bool] = Bounded(capacity)
        self._probes: Bounded[str, vault_events.ProbeRequested] = Bounded(capacity)
        self._subs: list[Subscription] = []

    # -- feeding --------------------------------------------------------------------------------
    def remember(self, event: object) -> None:
        if isinstance(event, rec_events.RecordingStarted):
            self._started.put(event.recording_id, event)
        elif isinstance(event, up_events.UploadAttemptStarted):
            self._jobs.put(event.job_id, event)
        elif isinstance(event, rec_events.ResendRequested):
            self._resends.put((event.recording_id, event.destination_id), event)
        elif isinstance(event, vault_events.ProbeRequested):
            self._probes.put(event.recording_id, event)

    async def follow(self) -> None:
        """Copy every new fact of interest as JetStream stores it (from now on: older ones are
        read on demand)."""
        for stream, kind in (
            (rec_events.STREAM, "started"),
            (rec_events.STREAM, "resend_requested"),
            (up_events.STREAM, "attempt_started"),
        ):
            self._subs.append(
                await self._js.subscribe(
                    stream.filter(kind),
                    stream=stream.name,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.NEW,
                    cb=self._on_message,
                )
            )

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def _on_message(self, msg: Msg) -> None:
        try:
            self.remember(decode(msg.data))
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass  # the stream's own consumers dead-letter it; a grant reads the log anyway

    # -- look-ups -------------------------------------------------------------------------------
    def known_started(self, rid: str) -> rec_events.RecordingStarted | None:
        """The copy in memory, if there is one (None says nothing: ask ``started``)."""
        return self._started.get(rid)

    def known_job(self, rid: str, job_id: str) -> up_events.UploadAttemptStarted | None:
        """The copy in memory, if there is one (None says nothing: ask ``job``)."""
        known = self._jobs.get(job_id)
        return known if known is not None and known.recording_id == rid else None

    async def started(self, rid: str) -> rec_events.RecordingStarted | None:
        known = self._started.get(rid)
        if known is not None:
            return known
        event = await natsio.last_event(self._js, rec_events.STREAM, f"recordings.{rid}.started")
        if not isinstance(event, rec_events.RecordingStarted):
            return None
        self.remember(event)
        return event

    async def job(self, rid: str, job_id: str) -> up_events.UploadAttemptStarted | None:
        """The announcement of ``job_id`` for recording ``rid``, or None."""
        known = self._jobs.get(job_id)
        if known is not None and known.recording_id == rid:
            return known
        # The uploader asks right after announcing the job, so it is almost always the newest
        # attempt; an older one (another job started since) needs the whole history.
        subject = f"uploads.{rid}.attempt_started"
        last = await natsio.last_event(self._js, up_events.STREAM, subject)
        if isinstance(last, up_events.UploadAttemptStarted) and last.job_id == job_id:
            history: list[object] = [last]
        else:
            history = [e for _, e in await natsio.read_subject(self._js, up_events.STREAM, subject)]
        for event in history:
            if isinstance(event, up_events.UploadAttemptStarted) and event.job_id == job_id:
                self.remember(event)
                return event
        return None

    async def resend_to(self, rid: str, destination_id: str) -> bool:
        """Whether a resend of ``rid`` to ``destination_id`` was requested."""
        if self._resends.get((rid, destination_id)) is not None:
            return True
        subject = f"recordings.{rid}.resend_requested"
        for _, event in await natsio.read_subject(self._js, rec_events.STREAM, subject):
            self.remember(event)
        return self._resends.get((rid, destination_id)) is not None

    async def purged(self, rid: str) -> bool:
        """Whether the recording's backup was purged (its data key is then destroyed for good).
        Only a yes is kept: a purge never comes undone."""
        if self._purged.get(rid) is not None:
            return True
        event = await natsio.last_event(self._js, up_events.STREAM, f"uploads.{rid}.backup_purged")
        if not isinstance(event, up_events.BackupPurged):
            return False
        self._purged.put(rid, True)
        return True

    async def probe(self, probe_id: str) -> vault_events.ProbeRequested | None:
        """The destination test ``probe_id`` (a vault's own request), or None. Not followed:
        the vault that asks remembers its own, and any other reads it from the stream."""
        known = self._probes.get(probe_id)
        if known is not None:
            return known
        subject = f"vault.{probe_id}.probe_requested"
        event = await natsio.last_event(self._js, vault_events.STREAM, subject)
        if not isinstance(event, vault_events.ProbeRequested):
            return None
        self.remember(event)
        return event
