"""One recording, end to end, as a newcomer would run it: `resguardo up`, an S3 destination, a
WebRTC call from two aiortc publishers, stop, and the files in the bucket with a SHA256SUMS that
coreutils accepts. Then the same with each service killed -9 mid-flight."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import av
import pytest

from resguardo.publisher import publish

from ..servers import MotoS3, wait_until
from .system import RunningSystem, stream_events

SECONDS = 6.0


def add_s3_destination(
    system: RunningSystem, s3: MotoS3, tmp_path: Path, bucket: str, name: str = "archive"
) -> None:
    s3.client().create_bucket(Bucket=bucket)
    config = tmp_path / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "bucket": bucket,
                "region": s3.region,
                "endpoint_url": s3.url,
                "prefix": "calls",
                "access_key_id": s3.access_key,
                "secret_access_key": s3.secret_key,
            }
        )
    )
    system.cli("destinations", "add", name, "--provider", "s3", "--config", str(config), "--json")


async def call(
    system: RunningSystem,
    rec: dict[str, str],
    participants: tuple[str, ...],
    seconds: float = SECONDS,
) -> None:
    ca = Path(system.endpoints["ca_file"])
    await asyncio.gather(
        *(
            publish(rec["whip_url"], rec["token"], participant=p, seconds=seconds, ca_file=ca)
            for p in participants
        )
    )


def download(s3: MotoS3, bucket: str, rid: str, into: Path) -> dict[str, Path]:
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    mine = [k for k in keys if f"/{rid}/" in k]
    into.mkdir(parents=True, exist_ok=True)
    out = {}
    for key in mine:
        name = key.rsplit("/", 1)[1]
        assert name not in out, f"two objects named {name} for one recording: {mine}"
        out[name] = into / name
        client.download_file(bucket, key, str(out[name]))
    return out


def check_delivered(
    s3: MotoS3, bucket: str, rid: str, into: Path, participants: tuple[str, ...], seconds: float
) -> None:
    files = download(s3, bucket, rid, into)
    assert {"SHA256SUMS", "manifest.json"} <= set(files), sorted(files)
    media = sorted(n for n in files if n.endswith((".webm", ".mkv")))
    # One file per participant, plus the per-call composite grid.
    assert media == sorted([*(f"{p}.webm" for p in participants), "composite.webm"])
    assert "manifest.json.sig" in files
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=into, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for name in media:
        with av.open(str(files[name])) as container:
            kinds = {s.type for s in container.streams}
            assert kinds == {"audio", "video"}, (name, kinds)
            frames = 0
            for packet in container.demux(container.streams.video[0]):
                for _ in packet.decode():
                    frames += 1
            duration = float(container.duration or 0) / av.time_base
        assert frames > 0
        assert abs(duration - seconds) <= 0.1 * seconds, (name, duration)


@pytest.mark.slow
def test_one_recording_end_to_end(system: RunningSystem, s3_server: MotoS3, tmp_path: Path) -> None:
    add_s3_destination(system, s3_server, tmp_path, "e2e-bucket")
    rec = system.cli_json("recordings", "start", "--destination", "archive")
    rid = rec["recording_id"]
    assert rec["whip_url"].endswith(f"/whip/{rid}")

    asyncio.run(call(system, rec, ("alice", "bob")))
    system.cli("recordings", "stop", rid)
    final = system.wait_state(rid, {"uploaded", "retained", "failed"})
    assert final["state"] == "uploaded", final

    check_delivered(s3_server, "e2e-bucket", rid, tmp_path / "download", ("alice", "bob"), SECONDS)
    assert all(f.get("sha256") for f in final["files"])

    # Every step of the recording's life is a JSON event in JetStream.
    events = asyncio.run(stream_events(system.endpoints["nats_url"], rid))
    types = [t for _s, t in events]
    for expected in (
        "recording.started",
        "capture.participant_joined",
        "capture.segment_written",
        "capture.closed",
        "recording.stop_requested",
        "transcode.sealed",
        "upload.attempt_started",
        "vault.grant_issued",
        "upload.file_uploaded",
        "upload.uploaded",
        "upload.backup_purged",
    ):
        assert expected in types, (expected, types)
    assert types.count("transcode.sealed") == 1 and types.count("upload.uploaded") == 1

    # The backup is purged after the confirmed upload.
    listed = system.cli_json("recordings", "list")
    assert any(
        r["recording_id"] == rid
        for r in (listed if isinstance(listed, list) else listed["recordings"])
    )
    backups = list((system.data_dir / "backup").glob(f"*/{rid}"))
    assert backups == [], backups


# Each service killed -9 while the recording is in "its" stage; the supervisor restarts it and
# the recording must still finish with exactly one copy of each file and matching hashes.
KILL_POINTS = {
    "proxy": "capture.segment_written",  # mid-capture
    "api": "capture.segment_written",
    "transcoder": "capture.closed",
    "credentials": "transcode.sealed",
    "uploader": "upload.attempt_started",
}


@pytest.mark.slow
@pytest.mark.parametrize("service", sorted(KILL_POINTS))
def test_recording_survives_kill_9(
    service: str, system: RunningSystem, s3_server: MotoS3, tmp_path: Path
) -> None:
    bucket = f"kill-{service}"
    add_s3_destination(system, s3_server, tmp_path, bucket)
    rec = system.cli_json("recordings", "start", "--destination", "archive")
    rid = rec["recording_id"]
    nats_url = system.endpoints["nats_url"]
    point = KILL_POINTS[service]

    def reached() -> bool:
        return point in [t for _s, t in asyncio.run(stream_events(nats_url, rid))]

    killed = False

    async def publish_and_kill() -> None:
        nonlocal killed
        task = asyncio.create_task(call(system, rec, ("alice",), seconds=SECONDS))
        if point.startswith("capture.segment"):
            for _ in range(200):
                if await asyncio.to_thread(reached):
                    system.kill9(service)
                    killed = True
                    break
                await asyncio.sleep(0.1)
        # The publisher may fail when the proxy dies under it: the recording must survive anyway.
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(publish_and_kill())
    system.cli("recordings", "stop", rid)
    if not killed:
        wait_until(reached, timeout=120, interval=0.05, message=point)
        system.kill9(service)
    final = system.wait_state(rid, {"uploaded", "retained", "failed"}, timeout=240)
    assert final["state"] == "uploaded", (final, system.logs()[-5000:])
    files = download(s3_server, bucket, rid, tmp_path / "download")
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "download", capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
    assert "alice.webm" in files
    types = [t for _s, t in asyncio.run(stream_events(nats_url, rid))]
    assert types.count("transcode.sealed") == 1
    assert types.count("upload.uploaded") == 1
