"""deploy/compose.yaml run for real: build the images, bring the whole stack up with podman and
podman-compose, record a call over WHIP into an S3 destination (a bucket in the stack's
SeaweedFS), check the delivered files against SHA256SUMS, scale the uploader to 2 with its own
compose file and record again, then take everything down. A canary secret must be in no layer."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resguardo.publisher import publish

from ..servers import REPO
from .stack import APP_IMAGE, SERVER_IMAGES, Stack, build_images, images_containing, wait_until

# Image build (cached after the first run), stack start, two recordings, teardown.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]
SECONDS = 4.0
BUCKET = "calls-archive"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    canary = f"resguardo-canary-{secrets.token_hex(12)}"
    stack = Stack.create(tmp_path, canary)
    started = time.monotonic()
    build_images(stack.env, tmp_path / "build.log")
    print(f"images built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    try:
        yield stack
    finally:
        left = stack.down()
        assert not any(left.values()), f"left behind: {left}"


def cli(stack: Stack, token: str, *args: str) -> Any:
    env = stack.env | {
        "RESGUARDO_API_URL": f"https://127.0.0.1:{stack.ports['API_PORT']}",
        "RESGUARDO_CA_FILE": str(stack.secrets_dir / "tls_cert"),
        "RESGUARDO_API_TOKEN": token,
    }
    result = subprocess.run(
        [sys.executable, "-m", "resguardo", *args, "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, f"resguardo {args[:2]}: {result.stderr.strip()}"
    return json.loads(result.stdout)


def s3_client(stack: Stack) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.ports['S3_PORT']}",
        region_name="us-east-1",
        aws_access_key_id="resguardo",
        aws_secret_access_key=(stack.secrets_dir / "backup_s3_secret").read_text().strip(),
    )


def record_and_check(stack: Stack, token: str, into: Path) -> str:
    rec = cli(stack, token, "recordings", "start", "--destination", "archive")
    rid = str(rec["recording_id"])
    ca = stack.secrets_dir / "tls_cert"
    asyncio.run(publish(rec["whip_url"], rec["token"], participant="alice", seconds=SECONDS,
                        ca_file=ca))  # fmt: skip
    cli(stack, token, "recordings", "stop", rid)

    def finished() -> dict[str, Any] | None:
        shown: dict[str, Any] = cli(stack, token, "recordings", "show", rid)
        return shown if shown["state"] in {"uploaded", "retained", "failed"} else None

    final = wait_until(finished, 180, f"{rid} to be uploaded", stack)
    if final["state"] != "uploaded":  # pytest.fail: an assert's message would be cut short
        pytest.fail(f"{json.dumps(final, indent=1)[-4000:]}\n{stack.logs()}")
    client = s3_client(stack)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    mine = [k for k in keys if f"/{rid}/" in k]
    into.mkdir(parents=True)
    for key in mine:
        client.download_file(BUCKET, key, str(into / key.rsplit("/", 1)[1]))
    names = {p.name for p in into.iterdir()}
    assert {"SHA256SUMS", "manifest.json", "manifest.json.sig", "alice.webm"} <= names, names
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=into, capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return rid


def test_compose_stack_records_scales_and_keeps_secrets_out_of_images(
    stack: Stack, tmp_path: Path
) -> None:
    canary = (stack.secrets_dir / "backup_s3_secret").read_text().strip()
    images = [APP_IMAGE, *(tag for _t, tag in SERVER_IMAGES.values())]
    assert images_containing(stack.env, images, canary.encode(), tmp_path) == []

    started = time.monotonic()
    stack.compose("up", "-d", timeout=400)
    token = wait_until(
        lambda: stack.cat("api", "/data/secrets/dev-api-token"), 120, "the API's dev token", stack
    )
    wait_until(lambda: cli(stack, token, "recordings", "list") is not None, 120, "the API", stack)
    print(f"stack up in {time.monotonic() - started:.0f} s", file=sys.stderr)
    # The secret reached no container's configuration either (only mounted files).
    for name in stack.containers():
        assert canary not in stack.podman("inspect", name), name

    wait_until(lambda: s3_client(stack).create_bucket(Bucket=BUCKET), 60, "SeaweedFS", stack)
    config = tmp_path / "destination.json"
    config.write_text(
        json.dumps(
            {
                "bucket": BUCKET,
                "region": "us-east-1",
                "endpoint_url": "http://seaweedfs:8333",  # as the vault and uploaders see it
                "prefix": "calls",
                "access_key_id": "resguardo",
                "secret_access_key": canary,
            }
        )
    )
    cli(stack, token, "destinations", "add", "archive", "--provider", "s3", "--config",
        str(config))  # fmt: skip
    record_and_check(stack, token, tmp_path / "first")

    # The uploader's own file, operated alone, scales it within the running stack.
    stack.compose("up", "-d", "--scale", "uploader=2", file="compose/uploader.yaml")
    wait_until(lambda: len(stack.containers("uploader")) == 2, 60, "two uploaders", stack)
    record_and_check(stack, token, tmp_path / "second")
    assert len(stack.containers("uploader")) == 2
