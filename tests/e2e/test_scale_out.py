"""Two instances of every service on one machine, each with a data dir of its own, the backup in
SeaweedFS: six recordings, the participants of one spread over both proxies, one instance of
every service killed -9 during the run. Every recording is uploaded exactly once, every file
checks against SHA256SUMS, and nothing of them is left in the backup bucket."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from resguardo.publisher import publish

from ..seaweed import seaweed_s3
from ..servers import MotoS3, wait_until
from .system import RunningSystem, start_system, stop_system, stream_events
from .test_end_to_end import add_s3_destination, download

pytestmark = pytest.mark.slow

SECONDS = 4.0
RECORDINGS = 6


async def call(whip_urls: tuple[str, str], token: str, ca_file: Path) -> None:
    results = await asyncio.gather(
        *(
            publish(url, token, participant=name, seconds=SECONDS, ca_file=ca_file)
            for url, name in zip(whip_urls, ("ana", "ben"), strict=True)
        ),
        return_exceptions=True,  # a publisher whose proxy was killed under it ends early
    )
    assert any(not isinstance(r, BaseException) for r in results), results


async def media_flowing(system: RunningSystem, rids: list[str], timeout: float = 60) -> None:
    """Until every recording has a track started: a kill before any publisher connected
    would test a refused connection, not a proxy lost mid-call (on a loaded machine ICE
    gathering alone can outlast a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    waiting = set(rids)
    while waiting and asyncio.get_running_loop().time() < deadline:
        for rid in list(waiting):
            kinds = {k for _, k in await stream_events(system.endpoints["nats_url"], rid)}
            if "capture.track_started" in kinds:
                waiting.discard(rid)
        await asyncio.sleep(0.3)
    assert not waiting, f"no media reached a proxy within {timeout:.0f} s for {sorted(waiting)}"


async def calls(system: RunningSystem, recs: list[dict[str, Any]], kill: str) -> None:
    bases = system.endpoints["whip_base_urls"]
    ca = Path(system.endpoints["ca_file"])
    tasks = []
    for i, rec in enumerate(recs):
        rid = rec["recording_id"]
        spread = (f"{bases[0]}/{rid}", f"{bases[1]}/{rid}")
        urls = spread if i == 0 else (rec["whip_url"], rec["whip_url"])
        tasks.append(asyncio.create_task(call(urls, rec["token"], ca)))
    await media_flowing(system, [rec["recording_id"] for rec in recs])
    os.kill(system.pid(kill), signal.SIGKILL)  # mid-call
    await asyncio.gather(*tasks)


def test_two_instances_of_everything_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, s3_server: MotoS3
) -> None:
    with seaweed_s3(tmp_path / "weed") as weed:
        backup = weed.new_bucket("resguardo-backup")
        secret = tmp_path / "backup-secret"
        secret.write_text(weed.secret_access_key)
        secret.chmod(0o600)
        system = start_system(
            tmp_path,
            {
                "RESGUARDO_BACKUP_URL": f"s3://{backup}",
                "RESGUARDO_BACKUP_S3_ENDPOINT": weed.endpoint,
                "RESGUARDO_BACKUP_S3_ACCESS_KEY_ID": weed.access_key_id,
                "RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE": str(secret),
                "RESGUARDO_TRANSCODER_ACK_WAIT_S": "10",
                "RESGUARDO_UPLOAD_ACK_WAIT_S": "10",
            },
            up_args=("--instances", "2"),
        )
        try:
            add_s3_destination(system, s3_server, tmp_path, "scale-bucket")
            recs = [
                system.cli_json("recordings", "start", "--destination", "archive")
                for _ in range(RECORDINGS)
            ]
            rids = [r["recording_id"] for r in recs]
            half = RECORDINGS // 2
            asyncio.run(calls(system, recs[:half], kill="proxy-1"))
            for rid in rids[:half]:
                system.cli("recordings", "stop", rid)
            system.kill9("transcoder-0")
            system.kill9("credentials-0")
            asyncio.run(calls(system, recs[half:], kill="proxy-0"))
            for rid in rids[half:]:
                system.cli("recordings", "stop", rid)
            system.kill9("uploader-0")
            system.kill9("api-0")
            system.wait_api()
            for rid in rids:
                system.wait_state(rid, {"uploaded"}, timeout=240)

            for i, rid in enumerate(rids):
                kinds = [
                    k for _, k in asyncio.run(stream_events(system.endpoints["nats_url"], rid))
                ]
                assert kinds.count("upload.uploaded") == 1, (rid, kinds)
                assert kinds.count("transcode.sealed") == 1, (rid, kinds)
                assert kinds.count("upload.backup_purged") == 1, (rid, kinds)
                into = tmp_path / "delivered" / rid
                files = download(s3_server, "scale-bucket", rid, into)  # one object per name
                assert {"SHA256SUMS", "manifest.json", "composite.webm"} <= set(files), files
                check = subprocess.run(
                    ["sha256sum", "-c", "SHA256SUMS"], cwd=into, capture_output=True, text=True
                )
                assert check.returncode == 0, check.stdout + check.stderr
                if i == 0:
                    assert {"ana.webm", "ben.webm"} <= set(files), files

            left = weed.client().list_objects_v2(Bucket=backup).get("KeyCount", 0)
            wait_until(
                lambda: weed.client().list_objects_v2(Bucket=backup).get("KeyCount", 0) == 0,
                timeout=30,
                message=f"the backup bucket to empty ({left} objects left)",
            )
        finally:
            stop_system(system)
