"""The read model of one recording, folded from its events: pure, no I/O.

``apply(view, event)`` returns the new view; ``summarize(event)`` is what the API shows of an
event in a recording's history (no secret ever: events carry none, and the WHIP token hash is
left out too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from shared.events import captures, recordings, tag_of, transcodes, uploads
from shared.events.base import Event

from .state import State, evolve


class Participant(msgspec.Struct, kw_only=True):
    participant_id: str
    display_name: str = ""
    sessions: int = 0
    connected: bool = False
    tracks: list[str] = msgspec.field(default_factory=list)
    joined_at: datetime | None = None
    left_at: datetime | None = None


class FileView(msgspec.Struct, kw_only=True):
    name: str
    role: str = ""
    size: int = 0
    sha256: str = ""
    remote_uri: str | None = None


class RecordingView(msgspec.Struct, kw_only=True):
    recording_id: str
    tenant_id: str
    state: State
    created_at: datetime
    updated_at: datetime
    destination_id: str = ""
    destination: str = ""
    label: str = ""
    participants: list[Participant] = msgspec.field(default_factory=list)
    files: list[FileView] = msgspec.field(default_factory=list)
    stop_requested: bool = False


def _participant(view: RecordingView, pid: str) -> Participant:
    for p in view.participants:
        if p.participant_id == pid:
            return p
    p = Participant(participant_id=pid)
    view.participants.append(p)
    return p


def _file(view: RecordingView, name: str) -> FileView:
    for f in view.files:
        if f.name == name:
            return f
    f = FileView(name=name)
    view.files.append(f)
    return f


def _copy(view: RecordingView) -> RecordingView:
    # Views are small; a deep copy keeps apply() pure for callers that keep the old one.
    return msgspec.convert(msgspec.to_builtins(view, builtin_types=(datetime,)), RecordingView)


def apply(view: RecordingView | None, event: Event) -> RecordingView:
    """Fold one event into a recording's view (``None``: the first event we see of it)."""
    if view is None:
        view = RecordingView(
            recording_id=event.recording_id,
            tenant_id=event.tenant_id,
            state=evolve(None, event),
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
        )
    else:
        view = _copy(view)
        view.state = evolve(view.state, event)
        view.updated_at = max(view.updated_at, event.occurred_at)
        view.created_at = min(view.created_at, event.occurred_at)

    match event:
        case recordings.RecordingStarted():
            view.destination_id = event.destination_id
            view.destination = event.destination_name
            view.label = event.label
            view.created_at = event.occurred_at
        case recordings.RecordingStopRequested():
            view.stop_requested = True
        case captures.ParticipantJoined():
            p = _participant(view, event.participant_id)
            p.display_name = event.display_name or p.display_name
            p.sessions += 1
            p.connected = True
            p.joined_at = p.joined_at or event.occurred_at
        case captures.TrackStarted():
            p = _participant(view, event.participant_id)
            if event.kind not in p.tracks:
                p.tracks.append(event.kind)
        case captures.ParticipantLeft():
            p = _participant(view, event.participant_id)
            p.connected = False
            p.left_at = event.occurred_at
        case captures.CaptureClosed():
            for p in view.participants:
                p.connected = False
        case transcodes.RecordingSealed():
            for sealed in event.files:
                f = _file(view, sealed.name)
                f.role, f.size, f.sha256 = sealed.role, sealed.size, sealed.sha256
        case uploads.FileUploaded():
            _remote(view, event.file)
        case uploads.RecordingUploaded():
            for remote in event.files:
                _remote(view, remote)
    return view


def _remote(view: RecordingView, remote: uploads.RemoteFile) -> None:
    f = _file(view, remote.name)
    f.remote_uri = remote.uri
    f.size = f.size or remote.size
    f.sha256 = f.sha256 or remote.sha256


# Envelope fields shown separately, and fields not worth showing (the token hash is not a secret,
# but nobody reading the history needs it).
_HIDDEN = {
    "type",
    "recording_id",
    "tenant_id",
    "occurred_at",
    "schema_version",
    "whip_token_sha256",
}


def summarize(event: Event) -> dict[str, Any]:
    data = msgspec.to_builtins(event)
    assert isinstance(data, dict)
    return {k: v for k, v in data.items() if k not in _HIDDEN}


def event_type(event: Event) -> str:
    return tag_of(type(event))
