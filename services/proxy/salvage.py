"""At start: finish what a killed proxy left behind, for recordings whose capture is not closed.

- ``<seq>.rgc.part`` (a segment being written at the crash): its complete records are rewritten
  to ``<seq>.rgc`` with a fresh digest; a cut-off last record is dropped. The ``.part`` is first
  renamed to ``<seq>.rgc.salvage``, so a crash during salvage is resumed by the next start.
  Segments are encrypted: the chunks that verify are read (``chunkcrypt.decrypt_prefix``: the
  one the writer was filling is lost, as its file buffer was before), and the rewrite is a new
  encrypted file under a fresh salt. Each recording's key is asked of the vault ("salvage").
- every ``<seq>.rgc`` without a ``segment_written`` event (e.g. killed between rename and publish)
  gets one, and a track without ``track_started`` gets one from its segment header.

Ids are the deterministic ones a live proxy uses, so repeats are dropped by JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext

from shared import chunkcrypt
from shared.backup import UnsafePath, inside, pseudonym, recording_dir
from shared.capture_format import (
    PART_SUFFIX,
    SEGMENT_SUFFIX,
    SegmentFormatError,
    SegmentHeader,
    SegmentStats,
    SegmentWriter,
    fsync_dir,
    read_segment,
)
from shared.events import captures as cap
from shared.events import now
from shared.events.base import Event
from shared.ids import TENANT_ID_RE, is_recording_id, is_safe_name
from shared.integrity import Digest
from shared.recording_key import RecordingKey, RecordingKeyError

from . import facts
from .capture import Keep
from .session import Publish
from .stop import capture_state
from .whip import FetchKey

log = logging.getLogger(__name__)

SALVAGE_SUFFIX = ".salvage"


@dataclass(frozen=True)
class FoundSegment:
    participant_id: str
    header: SegmentHeader
    rel_path: str
    sha256: str  # of the plaintext, as in the event
    size: int
    stats: SegmentStats
    stored_sha256: str  # of the file's bytes, for the backup store


@dataclass(frozen=True)
class Crypt:
    """What reading and writing one recording's segments takes: its key and folder."""

    key: bytearray
    recording_id: str
    rec_dir: Path

    def name(self, path: Path) -> str:
        return path.relative_to(self.rec_dir).as_posix()


def _rewrite(salvage: Path, final: Path, crypt: Crypt) -> int:
    """Copy the complete records of ``salvage`` into ``final`` (via its .part); frames kept."""
    part = final.with_name(final.name + PART_SUFFIX)
    part.unlink(missing_ok=True)
    name = crypt.name(final)  # a .part is sealed under its final name
    try:
        header, frames = read_segment(
            salvage, key=crypt.key, recording_id=crypt.recording_id, name=name, salvage=True
        )
    except (SegmentFormatError, ValueError, OSError, chunkcrypt.ChunkCryptError):
        # The header is written before any frame: a file without one holds nothing to keep.
        salvage.unlink()
        return 0
    writer = SegmentWriter(final, header, key=crypt.key, name=name)
    for frame in frames:
        writer.append(frame)
    kept = writer.stats.frames
    if kept:
        writer.close()
    else:
        writer.abandon()
    salvage.unlink()
    fsync_dir(final.parent)
    return kept


def finish_partials(track_dir: Path, crypt: Crypt) -> int:
    """Turn every leftover ``*.part`` of one track into a finished segment; frames recovered."""
    recovered = 0
    for part in sorted(track_dir.glob(f"*{SEGMENT_SUFFIX}{PART_SUFFIX}")):
        final = part.with_name(part.name[: -len(PART_SUFFIX)])
        salvage = final.with_name(final.name + SALVAGE_SUFFIX)
        if final.exists() or salvage.exists():
            part.unlink()  # a finished twin, or a rewrite cut short: the other copy is the source
        else:
            os.replace(part, salvage)
    for salvage in sorted(track_dir.glob(f"*{SEGMENT_SUFFIX}{SALVAGE_SUFFIX}")):
        final = salvage.with_name(salvage.name[: -len(SALVAGE_SUFFIX)])
        if final.exists():
            salvage.unlink()
        else:
            recovered += _rewrite(salvage, final, crypt)
    return recovered


def scan_segment(path: Path, crypt: Crypt) -> tuple[SegmentHeader, Digest, Digest, SegmentStats]:
    """Header, plaintext digest, stored digest and stats of a finished segment (verified)."""
    name = crypt.name(path)
    header, frames = read_segment(path, key=crypt.key, recording_id=crypt.recording_id, name=name)
    stats = SegmentStats()
    for f in frames:
        if stats.frames == 0:
            stats.first_rtp_ts, stats.first_wallclock_ns = f.rtp_ts, f.wallclock_ns
        stats.frames += 1
        stats.keyframes += int(f.keyframe)
        stats.last_rtp_ts, stats.last_wallclock_ns = f.rtp_ts, f.wallclock_ns
    stored = Digest()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            stored.update(chunk)
        if not _encrypted(path):
            return header, stored, stored, stats  # written before encryption
        fh.seek(0)
        plain = Digest()
        for piece in chunkcrypt.decrypt_stream(
            fh, crypt.key, recording_id=crypt.recording_id, name=name
        ):
            plain.update(piece)
    return header, plain, stored, stats


def _encrypted(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(chunkcrypt.MAGIC)) == chunkcrypt.MAGIC


def _folder_of(crypt: Crypt, name: str, folder: str) -> bool:
    """Is ``folder`` the one that stands for ``name`` (a pseudonym, or the name itself in a
    backup written before encryption)?"""
    return folder in (name, pseudonym(crypt.key, name))


def recover_recording(
    rec_dir: Path, known: set[tuple[str, int]], crypt: Crypt
) -> list[FoundSegment]:
    """Finish partial segments under ``rec_dir`` and list finished ones not in ``known``."""
    found: list[FoundSegment] = []
    capture_root = rec_dir / "capture"
    for pdir in sorted(p for p in capture_root.iterdir() if p.is_dir()):
        if not is_safe_name(pdir.name):
            continue
        for tdir in sorted(t for t in pdir.iterdir() if t.is_dir()):
            if not is_safe_name(tdir.name):
                continue
            frames = finish_partials(tdir, crypt)
            if frames:
                log.info(
                    "salvaged a partial segment", extra={"track_id": tdir.name, "frames": frames}
                )
            for seg in sorted(tdir.glob(f"*{SEGMENT_SUFFIX}")):
                try:
                    header, digest, stored, stats = scan_segment(seg, crypt)
                except (SegmentFormatError, ValueError, OSError, chunkcrypt.ChunkCryptError) as exc:
                    log.warning(
                        "unreadable segment left as is", extra={"path": str(seg), "error": str(exc)}
                    )
                    continue
                if not _folder_of(crypt, header.track_id, tdir.name):
                    continue
                if (header.track_id, header.seq) in known:
                    continue
                if stats.frames == 0:
                    continue
                found.append(
                    FoundSegment(
                        participant_id=header.participant_id or pdir.name,
                        header=header,
                        rel_path=seg.relative_to(rec_dir).as_posix(),
                        sha256=digest.sha256,
                        size=digest.size,
                        stats=stats,
                        stored_sha256=stored.sha256,
                    )
                )
    return found


def salvage_events(
    state: facts.CaptureState, found: list[FoundSegment], *, recording_id: str, tenant_id: str
) -> list[Event]:
    """The ``track_started`` / ``segment_written`` events the history lacks (pure)."""
    out: list[Event] = []
    started: set[str] = set(state.tracks)
    for seg in sorted(found, key=lambda s: (s.header.track_id, s.header.seq)):
        h, s = seg.header, seg.stats
        kind: cap.TrackKind = "audio" if h.kind == "audio" else "video"
        if h.track_id not in started:
            started.add(h.track_id)
            session_id = h.track_id.rsplit("-", 2)[-2] if h.track_id.count("-") >= 2 else ""
            out.append(
                cap.TrackStarted(
                    event_id=facts.track_started_id(recording_id, h.track_id),
                    recording_id=recording_id,
                    tenant_id=tenant_id,
                    occurred_at=now(),
                    participant_id=seg.participant_id,
                    session_id=session_id,
                    track_id=h.track_id,
                    kind=kind,
                    codec=h.codec,
                    clock_rate=h.clock_rate,
                    channels=h.channels,
                    first_frame_wallclock_ns=s.first_wallclock_ns,
                )
            )
        out.append(
            cap.SegmentWritten(
                event_id=facts.segment_id(recording_id, h.track_id, h.seq),
                recording_id=recording_id,
                tenant_id=tenant_id,
                occurred_at=now(),
                participant_id=seg.participant_id,
                track_id=h.track_id,
                kind=kind,
                seq=h.seq,
                path=seg.rel_path,
                sha256=seg.sha256,
                size=seg.size,
                frames=s.frames,
                first_rtp_ts=s.first_rtp_ts,
                last_rtp_ts=s.last_rtp_ts,
                first_wallclock_ns=s.first_wallclock_ns,
                last_wallclock_ns=s.last_wallclock_ns,
                keyframes=s.keyframes,
            )
        )
    return out


def _recordings_on_disk(root: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not root.is_dir():
        return out
    for tdir in root.iterdir():
        if not (tdir.is_dir() and TENANT_ID_RE.match(tdir.name)):
            continue
        for rdir in tdir.iterdir():
            if rdir.is_dir() and is_recording_id(rdir.name) and (rdir / "capture").is_dir():
                out.append((tdir.name, rdir.name))
    return sorted(out)


async def salvage(
    js: JetStreamContext,
    backup_root: Path,
    publish: Publish,
    fetch_key: FetchKey,
    keep: Keep | None = None,
) -> int:
    """Recover every unclosed recording under ``backup_root``; returns events published. With
    ``keep`` (an object store), each recovered segment is put in the store before its event."""
    published = 0
    for tenant_id, rid in await asyncio.to_thread(_recordings_on_disk, backup_root):
        state = await capture_state(js, rid)
        if state.closed is not None:
            continue  # closed captures are the transcoder's now; never change their files
        try:
            key = await fetch_key(rid, tenant_id, "salvage")
        except RecordingKeyError as exc:
            if exc.transient:
                raise  # the vault is not there yet: the supervisor starts the proxy again
            log.warning(
                "recording left as is: its key was refused",
                extra={"recording_id": rid, "reason": str(exc)},
            )
            continue
        try:
            rec_dir = recording_dir(backup_root, tenant_id, rid)
            published += await _salvage_one(rec_dir, publish, keep, key, state)
        finally:
            key.wipe()
    return published


async def _salvage_one(
    rec_dir: Path,
    publish: Publish,
    keep: Keep | None,
    key: RecordingKey,
    state: facts.CaptureState,
) -> int:
    published = 0
    rid, tenant_id = rec_dir.name, rec_dir.parent.name
    crypt = Crypt(key.data_key, rid, rec_dir)
    found = await asyncio.to_thread(recover_recording, rec_dir, set(state.segments), crypt)
    if keep is not None:
        # Keep the local copy until its event is out: killed in between, the next start
        # must still find the segment here (it never looks in the store).
        for seg in found:
            await keep(rec_dir / seg.rel_path, sha256=seg.stored_sha256, drop_local=False)
    for event in salvage_events(state, found, recording_id=rid, tenant_id=tenant_id):
        await publish(event)
        published += 1
    if keep is not None:
        # In the store, and now named by an event: this machine's copies are done with
        # (those of a start killed after its publishes, before this clean-up, too).
        done: list[Path | None] = [rec_dir / seg.rel_path for seg in found]
        done += [_inside(rec_dir, seg.path) for seg in state.segments.values()]
        await asyncio.to_thread(_unlink_all, done)
    if found:
        log.info("salvaged segments", extra={"recording_id": rid, "segments": len(found)})
    return published


def _inside(rec_dir: Path, rel: str) -> Path | None:
    """An event's segment path, only if it stays inside the recording's folder."""
    try:
        return inside(rec_dir, rel)
    except UnsafePath:
        return None


def _unlink_all(paths: list[Path | None]) -> None:
    for path in paths:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
