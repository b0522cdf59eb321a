"""A recording's state, as a pure fold over its events: ``evolve(state, event) -> state``.

    capturing    after recording.started (and the initial state of any recording we hear of)
    transcoding  after capture.closed
    uploading    after transcode.sealed or upload.attempt_started
    uploaded     after upload.uploaded
    retained     after upload.retained
    failed       after transcode.quarantined

The projector follows each stream separately, so events of one recording can arrive in a different
order across streams (e.g. while catching up, uploads before captures). State therefore never moves
back to an earlier stage, with one exception: a new upload attempt (a resend) after ``uploaded`` or
``retained`` moves it back to ``uploading``; that attempt is on the same stream as what it follows,
so it always arrives after it.
"""

from __future__ import annotations

from typing import Literal

from shared.events import captures, recordings, transcodes, uploads
from shared.events.base import Event

State = Literal["capturing", "transcoding", "uploading", "uploaded", "retained", "failed"]
STATES: tuple[State, ...] = (
    "capturing",
    "transcoding",
    "uploading",
    "uploaded",
    "retained",
    "failed",
)
INITIAL: State = "capturing"
FINAL: frozenset[State] = frozenset({"uploaded", "retained", "failed"})
RESENDABLE: frozenset[State] = frozenset({"uploaded", "retained"})

_STAGE: dict[State, int] = {
    "capturing": 0,
    "transcoding": 1,
    "uploading": 2,
    "uploaded": 3,
    "retained": 3,
    "failed": 3,
}


def target(event: Event) -> State | None:
    """The state an event asks for, or None when it does not change the state."""
    match event:
        case recordings.RecordingStarted():
            return "capturing"
        case captures.CaptureClosed():
            return "transcoding"
        case transcodes.RecordingSealed() | uploads.UploadAttemptStarted():
            return "uploading"
        case transcodes.RecordingQuarantined():
            return "failed"
        case uploads.RecordingUploaded():
            return "uploaded"
        case uploads.RecordingRetained():
            return "retained"
    return None


def evolve(state: State | None, event: Event) -> State:
    current: State = state or INITIAL
    wanted = target(event)
    if wanted is None or wanted == current:
        return current
    if isinstance(event, uploads.UploadAttemptStarted) and current in RESENDABLE:
        return "uploading"  # a resend: a new attempt after a finished one
    if _STAGE[wanted] >= _STAGE[current]:
        return wanted
    return current  # a late event from another stream: the recording is already past it
