"""The backup in an object store (SeaweedFS, which validates checksums and credentials): a call
recorded by `resguardo up` with RESGUARDO_BACKUP_URL=s3://... is captured into the store,
transcoded and uploaded from it, and purged from it; the local folder was only a spool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.events import uploads as up

from ..seaweed import seaweed_s3
from .system import start_system, stop_system, store_backup_env, stream_events

pytestmark = pytest.mark.slow


def test_a_call_goes_through_the_object_store_and_leaves_nothing_in_it(tmp_path: Path) -> None:
    with seaweed_s3(tmp_path / "weed") as weed:
        bucket = weed.new_bucket("resguardo-backup")
        system = start_system(tmp_path, store_backup_env(weed, bucket, tmp_path))
        try:
            final = system.cli_json("demo", "--seconds", "4")
            assert final["state"] == "uploaded", final
            rid, tenant = final["recording_id"], final["tenant_id"]

            events = asyncio.run(stream_events(system.endpoints["nats_url"], rid))
            kinds = [kind for _, kind in events]
            assert kinds.count("upload.uploaded") == 1
            segments = kinds.count("capture.segment_written")
            assert segments >= 4, kinds  # two participants, audio and video
            purged = asyncio.run(purge_event(system.endpoints["nats_url"], rid))
            # Every capture segment and every output file was an object in the store.
            assert purged.files == segments + len(final["files"]), purged
            assert purged.bytes_freed > sum(f["size"] for f in final["files"]), purged

            listing = weed.client().list_objects_v2(Bucket=bucket, Prefix="backup/")
            assert listing.get("KeyCount", 0) == 0, listing.get("Contents")
            assert not (system.data_dir / "backup" / tenant / rid).exists()

            status = system.cli_json("status")
            assert status["healthy"], status["problems"]
            assert status["backup"]["root"] == f"s3://{bucket}/backup"
            assert status["backup"]["tenants"].get(tenant, {"bytes": 0})["bytes"] == 0
            for name in ("proxy", "transcoder", "uploader"):
                assert status["services"][name]["checks"]["backup store"] == "ok"

            delivered = next((system.data_dir / "demo-output").rglob(rid))
            verified = system.cli("verify", str(delivered), check=False)
            assert verified.returncode == 0, verified.stdout + verified.stderr
        finally:
            stop_system(system)


async def purge_event(nats_url: str, rid: str) -> up.BackupPurged:
    import nats

    from shared import natsio

    nc = await nats.connect(nats_url)
    try:
        found = await natsio.last_event(nc.jetstream(), up.STREAM, f"uploads.{rid}.backup_purged")
    finally:
        await nc.close()
    assert isinstance(found, up.BackupPurged), found
    return found
