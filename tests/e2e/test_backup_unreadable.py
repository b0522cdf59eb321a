"""Staff who can read the backup storage cannot read a recording, and after the purge nobody can.

`resguardo up` with the backup in an object store (SeaweedFS), so the proxy, transcoder and
uploader each keep a local spool too. A call by a participant with a telling name is recorded to
a destination that fails, so the recording is retained and its backup stays; during the call and
after it, every object key, every object, every spool file name and every spool file is
searched for what would give the call away: the participant's name, codec and container headers,
and frames the publisher sent (read back with the recording's own key). Then a copy of the whole
backup is taken, the recording is re-sent to a working destination, uploaded and purged, and
that copy is shown to be worthless: the vault destroyed the key and refuses it to anyone.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path
from typing import Any

import nats
import pytest

from resguardo.publisher import publish
from shared import chunkcrypt
from shared.capture_format import read_segment
from shared.events import captures as cap
from shared.recording_key import RecordingKeyError, fetch_recording_key

from ..seaweed import SeaweedS3, seaweed_s3
from ..servers import wait_until
from .system import RunningSystem, start_system, stop_system, store_backup_env

pytestmark = pytest.mark.slow

NAME = "Zoe Quintanilla-Marsh"  # display name; the participant id is its slug
PARTICIPANT = "zoe-quintanilla-marsh"
SECONDS = 6.0
# Markers of media in clear, long enough that random ciphertext cannot hold one by chance: Opus's
# header, the WebM DocType element, Matroska's doctype, a 640x360 VP8 key frame's start code and
# size, our own segment magic.
MARKERS = (
    b"OpusHead",
    b"\x42\x82\x84webm",
    b"matroska",
    b"\x9d\x01\x2a\x80\x02\x68\x01",
    b"RGCAP1\n",
)


def everything(weed: SeaweedS3, bucket: str, spools: list[Path]) -> dict[str, bytes]:
    """Every object of the backup store and every file of every spool, by name."""
    out: dict[str, bytes] = {}
    client = weed.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[f"s3://{obj['Key']}"] = client.get_object(Bucket=bucket, Key=obj["Key"])[
                "Body"
            ].read()
    for spool in spools:
        for path in spool.rglob("*"):
            if path.is_file():
                out[str(path)] = path.read_bytes()
    return out


def leaks(found: dict[str, bytes], needles: list[bytes]) -> list[str]:
    bad = []
    for name, data in found.items():
        lowered = name.lower()
        if PARTICIPANT in lowered or "zoe" in lowered or "quintanilla" in lowered:
            bad.append(f"name in {name}")
        for needle in needles:
            if needle in data:
                bad.append(f"{needle[:16]!r} in {name}")
    return bad


async def key_of(system: RunningSystem, rid: str, tenant: str) -> bytearray:
    nc = await nats.connect(system.endpoints["nats_url"].split(","))
    try:
        key = await fetch_recording_key(
            nc, recording_id=rid, tenant_id=tenant, purpose="transcode", service="test"
        )
        return bytearray(key.data_key)
    finally:
        await nc.close()


async def segments_of(system: RunningSystem, rid: str) -> list[cap.SegmentWritten]:
    from shared import natsio

    nc = await nats.connect(system.endpoints["nats_url"].split(","))
    try:
        history = await natsio.read_subject(nc.jetstream(), cap.STREAM, f"captures.{rid}.>")
    finally:
        await nc.close()
    return [e for _, e in history if isinstance(e, cap.SegmentWritten)]


def sent_frames(
    weed: SeaweedS3, bucket: str, segs: list[cap.SegmentWritten], key: bytes, tmp: Path
) -> list[bytes]:
    """Frames the publisher sent, as the proxy stored them: decrypted with the recording key."""
    frames: list[bytes] = []
    client = weed.client()
    for seg in segs[:4]:
        obj = f"backup/{seg.tenant_id}/{seg.recording_id}/{seg.path}"
        local = tmp / seg.path.replace("/", "_")
        local.write_bytes(client.get_object(Bucket=bucket, Key=obj)["Body"].read())
        _, it = read_segment(local, key=key, recording_id=seg.recording_id, name=seg.path)
        frames += [f.data[:64] for f in it if len(f.data) >= 64][:5]
    return frames


def test_the_backup_reveals_nothing_and_is_unreadable_after_the_purge(tmp_path: Path) -> None:
    with seaweed_s3(tmp_path / "weed") as weed:
        bucket = weed.new_bucket("resguardo-backup")
        system = start_system(
            tmp_path,
            store_backup_env(weed, bucket, tmp_path) | {"RESGUARDO_UPLOAD_MAX_ATTEMPTS": "1"},
        )
        try:
            run(system, weed, bucket, tmp_path)
        finally:
            stop_system(system)


def add_file_destination(system: RunningSystem, tmp_path: Path, name: str, path: Path) -> None:
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({"path": str(path)}))
    system.cli(
        "destinations", "add", name, "--provider", "file", "--config", str(config), "--no-probe"
    )


def run(system: RunningSystem, weed: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the destination folder should be: every upload fails\n")
    add_file_destination(system, tmp_path, "broken", blocker / "calls")
    add_file_destination(system, tmp_path, "good", tmp_path / "delivered")
    rec = system.cli_json("recordings", "start", "--destination", "broken")
    rid = rec["recording_id"]
    tenant = system.cli_json("recordings", "show", rid)["tenant_id"]
    spools = [system.data_dir / "backup"]
    ca = Path(system.endpoints["ca_file"])

    async def call() -> list[str]:
        task = asyncio.create_task(
            publish(rec["whip_url"], rec["token"], participant=NAME, seconds=SECONDS, ca_file=ca)
        )
        await asyncio.sleep(SECONDS / 2)
        during = leaks(everything(weed, bucket, spools), [n.encode() for n in (NAME, PARTICIPANT)])
        await task
        return during

    assert asyncio.run(call()) == []
    system.cli("recordings", "stop", rid)
    final = system.wait_state(rid, {"retained", "uploaded", "failed"}, timeout=180)
    assert final["state"] == "retained", final

    key = asyncio.run(key_of(system, rid, tenant))
    segs = asyncio.run(segments_of(system, rid))
    assert segs and all(PARTICIPANT not in s.path for s in segs)
    frames = sent_frames(weed, bucket, segs, key, tmp_path)
    assert len(frames) >= 5
    needles = [NAME.encode(), PARTICIPANT.encode(), *MARKERS, *frames]
    backup = everything(weed, bucket, spools)
    assert any(k.startswith("s3://") and "/output-" in k for k in backup), sorted(backup)
    assert leaks(backup, needles) == []
    for name, data in backup.items():
        if name.startswith("s3://"):
            assert data.startswith(chunkcrypt.MAGIC), name  # every object is encrypted
    # The search is not blind: the same files decrypted give the call away at once.
    opened: dict[str, bytes] = {}
    for name, data in backup.items():
        if name.startswith("s3://") and "/output-" in name:
            rel = name.split(f"/{rid}/", 1)[1]
            chunks = chunkcrypt.decrypt_stream(io.BytesIO(data), key, recording_id=rid, name=rel)
            opened[name] = b"".join(chunks)
    found = leaks(opened, needles)
    assert any("webm" in f for f in found) and any("OpusHead" in f for f in found), found
    assert any(NAME.encode() in plain for plain in opened.values())  # the manifest names her

    # A copy of the backup (a replica, a snapshot, a stolen disk), taken before the purge.
    copy = tmp_path / "stolen"
    for name, data in backup.items():
        dest = copy / name.replace("s3://", "s3/").lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)

    system.cli("recordings", "resend", rid, "--destination", "good")
    wait_until(
        lambda: system.cli_json("recordings", "show", rid)["state"] == "uploaded",
        timeout=180,
        message="the re-sent recording to be uploaded",
    )
    delivered = next((tmp_path / "delivered").rglob(rid))
    verified = system.cli("verify", str(delivered), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    def purged() -> bool:
        listing = weed.client().list_objects_v2(Bucket=bucket, Prefix=f"backup/{tenant}/{rid}/")
        return listing.get("KeyCount", 0) == 0

    wait_until(purged, timeout=60, message="the backup to be purged")

    # The key is destroyed: the vault gives it to no one (the log says purged).
    async def refused() -> RecordingKeyError:
        with pytest.raises(RecordingKeyError) as exc:
            await key_of(system, rid, tenant)
        return exc.value

    error = asyncio.run(refused())
    assert error.status == 410 and not error.transient, error
    # What was stolen opens under no key anyone can get; the key we held (a service's copy,
    # wiped at the end of its job in the real system) was the only way in.
    stolen = next(p for p in copy.rglob("*") if p.is_file() and "/output-" in str(p))
    with stolen.open("rb") as fh, pytest.raises(chunkcrypt.TamperedError):
        chunkcrypt.verify_stream(fh, bytes(32), recording_id=rid, name="any")
    shutil.rmtree(copy)
    assert_audit(system, rid)


def assert_audit(system: RunningSystem, rid: str) -> None:
    async def kinds() -> list[Any]:
        from shared import natsio
        from shared.events import vault as vault_events

        nc = await nats.connect(system.endpoints["nats_url"].split(","))
        try:
            history = await natsio.read_subject(
                nc.jetstream(), vault_events.STREAM, f"vault.{rid}.>"
            )
        finally:
            await nc.close()
        return [e for _, e in history]

    wait_until(
        lambda: any(type(e).__name__ == "RecordingKeyDestroyed" for e in asyncio.run(kinds())),
        timeout=60,
        message="the vault to destroy the recording's key",
    )
    audit = asyncio.run(kinds())
    issued = [e for e in audit if type(e).__name__ == "RecordingKeyIssued"]
    assert {e.requester for e in issued} >= {"proxy", "transcoder", "uploader"}, issued
    assert any(type(e).__name__ == "RecordingKeyDestroyed" for e in audit), audit
