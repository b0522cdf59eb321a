"""The transcoder's health port: one recording sealed and one quarantined, as its metrics count
them, and the pure mapping of sealed files onto output kinds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.js import JetStreamContext

from services.transcoder.metrics import output_kind
from shared.events import transcodes as tx
from tests import scrape
from tests.servers import wait_until

from .capture_factory import ParticipantSpec, SessionSpec, publish_capture
from .conftest import Transcoders, Vault, wait_event


def test_output_kinds() -> None:
    def sealed(role: str, participant_id: str = "") -> tx.SealedFile:
        return tx.SealedFile(
            name="x",
            role=role,  # type: ignore[arg-type]
            size=1,
            sha256="0" * 64,
            crc32=0,
            participant_id=participant_id,
        )

    assert output_kind(sealed("media", "alice")) == "participant"
    assert output_kind(sealed("media")) == "composite"
    for role in ("manifest", "signature", "checksums"):
        assert output_kind(sealed(role)) == role


async def test_sealed_and_quarantined_are_counted(
    js: JetStreamContext, transcoders: Transcoders, backup_root: Path, vault: Vault
) -> None:
    good = await vault.capture(js, backup_root, [ParticipantSpec("alice", (SessionSpec(0, 3),))])
    bad = await vault.capture(js, backup_root, [ParticipantSpec("bob", (SessionSpec(0, 3),))])
    path = bad.segment_path(bad.segments[1])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    transcoders.start()
    base = scrape.health_url(transcoders.data_dir / "run", "transcoder")
    await publish_capture(js, good)
    await publish_capture(js, bad)
    sealed = await wait_event(js, "sealed", good.recording_id, explain=transcoders.log_tail)
    await wait_event(js, "quarantined", bad.recording_id, explain=transcoders.log_tail)
    assert isinstance(sealed, tx.RecordingSealed)

    def counted() -> scrape.Samples | None:
        m = scrape.scrape(base)
        done = m.named("resguardo_transcoder_recordings_total")
        return m if sum(done.values()) == 2 else None

    m = await asyncio.to_thread(wait_until, counted, 30, 0.2, "both recordings counted")
    assert m.value("resguardo_transcoder_recordings_total", outcome="sealed") == 1
    assert m.value("resguardo_transcoder_recordings_total", outcome="quarantined") == 1
    for outcome in ("sealed", "quarantined"):
        assert m.value("resguardo_transcoder_transcode_seconds_count", outcome=outcome) == 1
    assert m.value("resguardo_transcoder_transcode_seconds_sum", outcome="sealed") > 0
    expected = {"participant": 1, "composite": 1, "manifest": 1, "signature": 1, "checksums": 1}
    for kind, n in expected.items():
        assert m.value("resguardo_transcoder_outputs_total", kind=kind) == n, kind
        size = sum(f.size for f in sealed.files if output_kind(f) == kind)
        assert m.value("resguardo_transcoder_output_bytes_total", kind=kind) == size, kind

    status, state = await asyncio.to_thread(scrape.readiness, base)
    assert status == 200, state
    assert state["checks"] == {
        "nats": "ok",
        "started": "ok",
        "consumer transcoder": "ok",
        "backup store": "ok",
    }
