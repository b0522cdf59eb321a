"""Destination probes: on create (unless probe is off) and on test, the vault asks an uploader,
which gets a one-shot grant, writes, confirms and deletes a small object with its adapters,
against a real moto S3 server (and one with IAM authentication on, for bad keys and missing
permissions); real vault and uploader processes. A failure names its cause and the field to fix,
and nothing is stored. The vault itself never connects to the storage."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import boto3
import msgspec
import psutil
import pytest
from nats.aio.client import Client as NATS

from shared import natsio
from shared.embedded import NatsServer, free_port, python_env, wait_for_port
from shared.events import uploads as up_events
from shared.events import vault as vault_events
from shared.ids import new_tenant_id
from shared.vault_rpc import SUBJECT_TEST, DestinationQuery, DestinationReply, ProbeReply
from tests.credentials.helpers import VaultClient, rpc
from tests.servers import MotoS3, ServiceProcess

# Every test here needs an uploader running: it is the one that probes.
pytestmark = pytest.mark.usefixtures("uploader")

CANARY = "CANARY-probe-" + secrets.token_hex(8)
PROBE_TIMEOUT = 30.0


def s3_config(s3: MotoS3, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "region": s3.region,
        "endpoint_url": s3.url,
        "prefix": "calls",
        "access_key_id": s3.access_key,
        "secret_access_key": CANARY,
        **extra,
    }


def objects(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


async def create(client: VaultClient, tenant: str, name: str, provider: str, config: Any) -> Any:
    return await client.create(
        tenant, name, provider, config, probe=True, timeout=PROBE_TIMEOUT + 10
    )


async def test_a_working_s3_destination_is_probed_then_stored(
    client: VaultClient,
    s3_server: MotoS3,
    vault_proc: ServiceProcess,
    uploader: ServiceProcess,
    nc: NATS,
    nats_server: NatsServer,
    database_url: str,
) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="probe-ok")
    tenant = new_tenant_id()
    reply = await create(client, tenant, "good", "s3", s3_config(s3_server, "probe-ok"))
    assert reply.problem is None and reply.destination is not None, reply.problem
    assert objects(s3, "probe-ok") == []  # written, confirmed, deleted
    log = vault_proc.log_path.read_text()
    assert '"probed": true' in log and CANARY not in log
    assert CANARY not in uploader.log_path.read_text()
    # The uploader did it, with a probe grant of its own, audited; the answer is in the log too.
    js = nc.jetstream()
    (_, asked), *_ = await natsio.read_subject(js, vault_events.STREAM, "vault.*.probe_requested")
    assert isinstance(asked, vault_events.ProbeRequested)
    assert (asked.tenant_id, asked.purpose) == (tenant, "add")
    assert asked.destination_id == reply.destination.destination_id
    grants = await natsio.read_subject(js, vault_events.STREAM, f"vault.{asked.recording_id}.>")
    issued = [e for _, e in grants if isinstance(e, vault_events.GrantIssued)]
    assert [(g.job_id, g.probe, g.requester) for g in issued] == [(asked.job_id, True, "uploader")]
    answer = await natsio.last_event(
        js, up_events.STREAM, f"uploads.{asked.recording_id}.probe_finished"
    )
    assert isinstance(answer, up_events.ProbeFinished) and answer.passed, answer
    for _, event in await natsio.read_subject(js, vault_events.STREAM, "vault.>"):
        assert CANARY not in msgspec.json.encode(event).decode()
    # The vault's only connections are to NATS and PostgreSQL, never to the storage.
    assert vault_proc.proc is not None
    allowed = {urlsplit(nats_server.url).port, urlsplit(database_url).port}
    peers = {
        c.raddr.port for c in psutil.Process(vault_proc.proc.pid).net_connections("inet") if c.raddr
    }
    assert peers and peers <= allowed, (peers, allowed)


async def test_a_missing_bucket_is_named_and_nothing_is_stored(
    client: VaultClient, s3_server: MotoS3, vault_proc: ServiceProcess, database_url: str
) -> None:
    tenant = new_tenant_id()
    reply = await create(client, tenant, "nobucket", "s3", s3_config(s3_server, "no-such-bucket"))
    assert reply.destination is None and reply.problem is not None
    assert (reply.problem.status, reply.problem.field) == (422, "config.bucket")
    assert "bucket does not exist" in reply.problem.message
    assert "NoSuchBucket" in reply.problem.message and "--no-probe" in reply.problem.message
    assert CANARY not in reply.problem.message
    assert (await client.list(tenant)).destinations == []
    # With the probe off, the same destination is stored (the first upload will fail instead).
    stored = await client.create(tenant, "nobucket", "s3", s3_config(s3_server, "no-such-bucket"))
    assert stored.destination is not None
    assert CANARY not in vault_proc.log_path.read_text()
    assert await pending_rows(database_url) == 0


async def pending_rows(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM vault.pending_destinations"))
    finally:
        await conn.close()


async def test_an_unreachable_endpoint_fails_the_probe(client: VaultClient) -> None:
    tenant = new_tenant_id()
    config = {
        "bucket": "x-bucket",
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "access_key_id": "AKID",
        "secret_access_key": CANARY,
    }
    reply = await create(client, tenant, "down", "s3", config)
    assert reply.problem is not None and reply.problem.status in (502, 504), reply.problem
    assert "could not reach" in reply.problem.message or "did not answer" in reply.problem.message
    assert (await client.list(tenant)).destinations == []


async def test_file_destinations_are_probed_without_leaving_anything(
    client: VaultClient, tmp_path: Path
) -> None:
    tenant = new_tenant_id()
    root = tmp_path / "remote"
    root.mkdir()
    reply = await create(client, tenant, "local", "file", {"path": str(root), "prefix": "calls"})
    assert reply.destination is not None, reply.problem
    assert list(root.rglob("*")) == []  # the probe's file and folders are gone
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where a folder should be")
    reply = await create(client, tenant, "blocked", "file", {"path": str(blocked)})
    assert reply.problem is not None and reply.problem.status == 422, reply.problem
    reply = await create(
        client,
        tenant,
        "bad-template",
        "file",
        {"path": str(root), "key_template": "{recording_id}"},
    )
    assert reply.problem is not None and reply.problem.field == "config.key_template"
    assert {d.name for d in (await client.list(tenant)).destinations} == {"local"}


async def test_destinations_test_probes_the_stored_credentials(
    client: VaultClient, nc: NATS, s3_server: MotoS3
) -> None:
    tenant = new_tenant_id()
    stored = await client.create(tenant, "later", "s3", s3_config(s3_server, "made-later"))
    assert stored.destination is not None

    async def test(name: str) -> ProbeReply:
        return await rpc(
            nc,
            SUBJECT_TEST,
            DestinationQuery(tenant_id=tenant, name=name),
            ProbeReply,
            timeout=PROBE_TIMEOUT + 10,
        )

    failed = await test("later")
    assert failed.problem is not None and failed.problem.field == "config.bucket"
    assert "re-create the destination" in failed.problem.message
    assert failed.destination is not None and failed.probe is None
    s3_server.client().create_bucket(Bucket="made-later")
    passed = await test("later")
    assert passed.problem is None and passed.probe is not None, passed.problem
    assert passed.probe.key.startswith("calls/") and passed.probe.deleted
    assert passed.probe.checksum_algorithm == "CRC32" and passed.probe.checksum
    assert objects(s3_server.client(), "made-later") == []
    missing = await test("nothing")
    assert missing.problem is not None and missing.problem.status == 404
    # Another tenant cannot test (or even see) it.
    other = await rpc(
        nc,
        SUBJECT_TEST,
        DestinationQuery(tenant_id=new_tenant_id(), name="later"),
        ProbeReply,
        timeout=PROBE_TIMEOUT,
    )
    assert other.problem is not None and other.problem.status == 404
    assert CANARY not in msgspec.json.encode(passed).decode()


# --- S3 with authentication: wrong keys and missing permissions ---------------------------------


@dataclass
class AuthS3:
    url: str
    writer: dict[str, str]  # may do anything in S3
    reader: dict[str, str]  # may only list buckets
    bucket: str = "auth-bucket"


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3]:
    """moto with IAM authentication: the first 7 calls (users, keys, policies, bucket) are
    unauthenticated, every later one is checked against the users' keys and policies."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto-auth") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        env={**python_env(), "INITIAL_NO_AUTH_ACTION_COUNT": "7"},
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        url = f"http://127.0.0.1:{port}"

        def client(service: str) -> Any:
            return boto3.client(
                service,
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="bootstrap",
                aws_secret_access_key="bootstrap",
            )

        iam = client("iam")
        keys = {}
        for user, action in (("writer", "s3:*"), ("reader", "s3:ListBucket")):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}],
            }
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
        client("s3").create_bucket(Bucket="auth-bucket")

        def pair(k: dict[str, Any]) -> dict[str, str]:
            return {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"]}

        yield AuthS3(url=url, writer=pair(keys["writer"]), reader=pair(keys["reader"]))
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def auth_config(s3: AuthS3, keys: dict[str, str]) -> dict[str, Any]:
    return {"bucket": s3.bucket, "endpoint_url": s3.url, "region": "us-east-1", **keys}


@pytest.mark.parametrize(
    ("case", "field", "words"),
    [
        ("unknown-key", "config.access_key_id", "does not know this access key id"),
        ("wrong-secret", "config.secret_access_key", "does not match the access key id"),
        ("no-permission", "config", "not allowed to write"),
    ],
)
async def test_bad_keys_and_missing_permissions_are_named(
    client: VaultClient,
    auth_s3: AuthS3,
    vault_proc: ServiceProcess,
    case: str,
    field: str,
    words: str,
) -> None:
    keys = {
        "unknown-key": {"access_key_id": "AKIAUNKNOWN000000000", "secret_access_key": CANARY},
        "wrong-secret": {**auth_s3.writer, "secret_access_key": CANARY},
        "no-permission": auth_s3.reader,
    }[case]
    tenant = new_tenant_id()
    reply = await create(client, tenant, case, "s3", auth_config(auth_s3, keys))
    assert reply.destination is None and reply.problem is not None, case
    assert (reply.problem.status, reply.problem.field) == (422, field), reply.problem
    assert words in reply.problem.message, reply.problem.message
    assert CANARY not in reply.problem.message and keys["secret_access_key"] not in str(reply)
    assert (await client.list(tenant)).destinations == []
    assert CANARY not in vault_proc.log_path.read_text()


async def test_the_right_keys_pass_with_authentication_on(
    client: VaultClient, auth_s3: AuthS3
) -> None:
    reply = await create(
        client, new_tenant_id(), "authorized", "s3", auth_config(auth_s3, auth_s3.writer)
    )
    assert reply.problem is None and reply.destination is not None, reply.problem
    assert isinstance(reply, DestinationReply)
