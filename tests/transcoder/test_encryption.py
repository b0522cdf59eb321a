"""The transcoder on encrypted backups (real transcoder, real vault, real nats-server): nothing of
the call is in the backup in clear; a tampered segment is caught before anything is written; a
vault that refuses for good quarantines, one that is down only delays."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

from nats.js import JetStreamContext

from shared import chunkcrypt, natsio
from shared.events import event_id, now
from shared.events import uploads as up
from shared.events.transcodes import RecordingQuarantined, RecordingSealed

from ..credentials.helpers import start_vault, wait_ready
from .capture_factory import Capture, ParticipantSpec, SessionSpec, publish_capture
from .conftest import Transcoders, Vault, wait_event
from .media_probe import probe
from .sealed import assert_no_plaintext, plain_copy, private_words
from .test_transcoder import transcode_events

ALICE = ParticipantSpec(
    "alice-liddell-7f3a", sessions=(SessionSpec(0.0, 4.0),), display_name="Alice Liddell-Hargreaves"
)
BOB = ParticipantSpec(
    "bob-dylan-zimmerman",
    sessions=(SessionSpec(0.5, 3.0),),
    video="video/H264",
    display_name="Robert Zimmerman",
)


async def test_backup_holds_no_plaintext_and_outputs_decrypt_to_what_was_sealed(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault, tmp_path: Path
) -> None:
    capture = await vault.capture(js, backup_root, [ALICE, BOB])
    assert len(private_words(capture)) == 4
    # Before the transcoder runs: the capture as the proxy leaves it.
    assert_no_plaintext(backup_root, capture)
    transcoders.start()
    await publish_capture(js, capture)
    sealed = await wait_event(js, "sealed", capture.recording_id, explain=transcoders.log_tail)
    assert isinstance(sealed, RecordingSealed)
    out = backup_root / sealed.output_dir
    # Every output file (and every capture segment still there) is ciphertext, under a name that
    # says nothing; the participant names and the codecs' headers are nowhere.
    assert_no_plaintext(backup_root, capture)
    for f in sealed.files:
        assert (out / f.stored_name).read_bytes()[:6] == chunkcrypt.MAGIC, f.name
    # The transcoder's own log does not hold the key.
    assert capture.key.hex() not in transcoders.log_path.read_text()

    # With the recording's key, each file decrypts to exactly what the event announced...
    plain = plain_copy(capture, out, sealed.files, tmp_path / "plain")
    for f in sealed.files:
        data = (plain / f.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256), f.name
    # ...and the media files are what PyAV reads (H.264 passed through into Matroska).
    for f in sealed.files:
        if f.role == "media":
            p = probe(plain / f.name)
            assert p.errors == [] and p.frames.get("video", 0) > 0, (f.name, p.errors[:3])
    assert dict(probe(plain / f"{BOB.participant_id}.mkv").streams)["video"] == "h264"
    # Bound to its place: a file read under another name (another folder) does not open.
    media = next(f for f in sealed.files if f.role == "media")
    wrong = f"output-elsewhere/{media.stored_name}"
    try:
        chunkcrypt.verify_file(
            out / media.stored_name, capture.key, recording_id=capture.recording_id, name=wrong
        )
    except chunkcrypt.TamperedError:
        pass
    else:
        raise AssertionError("a sealed output opened under another name")


def _flip(capture: Capture) -> str:
    seg = capture.segments[1]
    path = capture.segment_path(seg)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return seg.path


def _truncate(capture: Capture) -> str:
    seg = capture.segments[-1]
    path = capture.segment_path(seg)
    path.write_bytes(path.read_bytes()[:-100])
    return seg.path


def _swap(capture: Capture) -> str:
    first, second = capture.segments[0], capture.segments[1]
    assert first.track_id == second.track_id
    a, b = capture.segment_path(first), capture.segment_path(second)
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    return first.path


async def test_every_kind_of_tampering_quarantines_naming_the_file(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    spec = [ParticipantSpec("alice", sessions=(SessionSpec(0, 4),))]
    cases: dict[str, tuple[Capture, str]] = {}
    for kind, tamper in (("flipped", _flip), ("truncated", _truncate), ("swapped", _swap)):
        capture = await vault.capture(js, backup_root, spec)
        cases[kind] = (capture, tamper(capture))
    # A segment copied in from another recording (its own key), at the right path.
    capture = await vault.capture(js, backup_root, spec)
    other = await vault.capture(js, backup_root, spec)
    victim = capture.segments[1]
    shutil.copyfile(other.segment_path(other.segments[1]), capture.segment_path(victim))
    cases["other recording"] = (capture, victim.path)

    transcoders.start()
    for capture, _ in cases.values():
        await publish_capture(js, capture)
    for kind, (capture, path) in cases.items():
        event = await wait_event(
            js, "quarantined", capture.recording_id, explain=transcoders.log_tail
        )
        assert isinstance(event, RecordingQuarantined)
        assert path in event.reason, (kind, event.reason)
        assert "fails authentication" in event.reason, (kind, event.reason)
        assert await transcode_events(js, capture.recording_id, "sealed") == []
        # Nothing was written: no output folder, no staging folder.
        assert not list(capture.rec_dir.glob("output*")), kind


async def test_purged_recording_is_quarantined_not_retried_forever(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    capture = await vault.capture(js, backup_root, [ALICE])
    await natsio.publish(
        js,
        up.BackupPurged(
            event_id=event_id(capture.recording_id, "backup_purged"),
            recording_id=capture.recording_id,
            tenant_id=capture.tenant_id,
            occurred_at=now(),
            job_id=f"{capture.recording_id}:1",
            bytes_freed=1,
            files=1,
        ),
    )
    transcoders.start(incomplete_attempts=20)
    await publish_capture(js, capture)
    event = await wait_event(js, "quarantined", capture.recording_id, explain=transcoders.log_tail)
    assert "purged" in event.reason and "cannot be read" in event.reason, event.reason
    assert not list(capture.rec_dir.glob("output*"))


async def test_vault_down_only_delays(
    js: JetStreamContext,
    transcoders: Transcoders,
    backup_root: Path,
    vault: Vault,
    tmp_path: Path,
    database_url: str,
) -> None:
    capture = await vault.capture(js, backup_root, [ParticipantSpec("alice", (SessionSpec(0, 2),))])
    vault.proc.stop()
    transcoders.start(incomplete_attempts=2)
    await publish_capture(js, capture)
    await asyncio.sleep(8)  # a few key requests fail; the capture waits, not quarantined
    assert await transcode_events(js, capture.recording_id) == []
    # The same vault comes back (same master key, same database): the recording is sealed.
    again = start_vault(tmp_path, transcoders.nats_url, database_url)
    try:
        await wait_ready(vault.nc, again)
        sealed = await wait_event(
            js, "sealed", capture.recording_id, timeout=90, explain=transcoders.log_tail
        )
        assert isinstance(sealed, RecordingSealed)
    finally:
        again.stop()
