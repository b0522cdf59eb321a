"""A destination test's grant is a job's grant like an upload's: checked against the vault's
``vault.probe_requested``, once only, audited; a destination being added is out of every upload's
reach until its test passed; and without an uploader an add fails clearly and stores nothing.
Real vault, uploader, nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared import natsio, sealedbox
from shared.embedded import OPERATOR, SERVICE_RIGHTS, NatsServer, system_users
from shared.events import vault as vault_events
from shared.ids import new_recording_id, new_tenant_id
from shared.vault_rpc import (
    SUBJECT_GRANT,
    SUBJECT_TEST,
    DestinationQuery,
    GrantReply,
    GrantRequest,
    ProbeReply,
)
from tests.credentials.helpers import VaultClient, announced_job, rpc, start_vault, wait_ready
from tests.servers import ServiceProcess

from .support import start_uploader


async def probe_grant(nc: NATS, asked: vault_events.ProbeRequested, **change: object) -> GrantReply:
    fields: dict[str, object] = {
        "job_id": asked.job_id,
        "recording_id": asked.recording_id,
        "tenant_id": asked.tenant_id,
        "destination_id": asked.destination_id,
        "public_key": sealedbox.public_bytes(X25519PrivateKey.generate()),
        "probe": True,
    }
    req = GrantRequest(**{**fields, **change})  # type: ignore[arg-type]
    return await rpc(nc, SUBJECT_GRANT, req, GrantReply)


async def requests(js: JetStreamContext, tenant: str) -> list[vault_events.ProbeRequested]:
    events = await natsio.read_subject(js, vault_events.STREAM, "vault.*.probe_requested")
    return [e for _, e in events if isinstance(e, vault_events.ProbeRequested)]


async def pending_rows(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM vault.pending_destinations"))
    finally:
        await conn.close()


@pytest.mark.usefixtures("uploader")
async def test_a_probe_grant_is_once_only_audited_and_checked(
    client: VaultClient, nc: NATS, tmp_path: Path
) -> None:
    tenant = new_tenant_id()
    root = tmp_path / "remote"
    stored = await client.create(tenant, "local", "file", {"path": str(root)})
    assert stored.destination is not None
    query = DestinationQuery(tenant_id=tenant, name="local")
    passed = await rpc(nc, SUBJECT_TEST, query, ProbeReply, timeout=40)
    assert passed.problem is None and passed.probe is not None, passed.problem
    js = nc.jetstream()
    [asked] = await requests(js, tenant)
    assert asked.purpose == "test" and asked.destination_id == stored.destination.destination_id

    again = await probe_grant(nc, asked)  # the uploader had the job's one grant already
    assert again.problem is not None and again.problem.status == 409, again.problem
    assert "destination test" in again.problem.message
    other = await probe_grant(nc, asked, job_id="probe-never-asked")
    assert other.problem is not None and other.problem.status == 403, other.problem
    stranger = await probe_grant(nc, asked, tenant_id=new_tenant_id())
    assert stranger.problem is not None and stranger.problem.status == 403
    nowhere = await probe_grant(nc, asked, recording_id=new_recording_id())
    assert nowhere.problem is not None and nowhere.problem.status == 403
    # A test's job is no upload job: an upload grant for it finds no recording.
    upload = await probe_grant(nc, asked, probe=False)
    assert upload.problem is not None and upload.problem.status == 404, upload.problem

    audit = [e for _, e in await natsio.read_subject(js, vault_events.STREAM, "vault.>")]
    issued = [e for e in audit if isinstance(e, vault_events.GrantIssued)]
    assert [(e.recording_id, e.probe) for e in issued] == [(asked.recording_id, True)]
    refused = [e for e in audit if isinstance(e, vault_events.GrantRefused)]
    assert [e.probe for e in refused] == [True, True, True, True, False]


@pytest.fixture
async def black_hole() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers: a storage endpoint that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def test_a_destination_being_added_cannot_be_granted_to_an_upload(
    tmp_path: Path,
    nats_server: NatsServer,
    database_url: str,
    nc: NATS,
    uploader: ServiceProcess,
    black_hole: int,
) -> None:
    vault = start_vault(tmp_path, nats_server.url, database_url, probe_timeout_s="4")
    try:
        await wait_ready(nc, vault)
        client = VaultClient(nc)
        js = nc.jetstream()
        tenant = new_tenant_id()
        config = {
            "bucket": "hangs",
            "endpoint_url": f"http://127.0.0.1:{black_hole}",
            "access_key_id": "AKID",
            "secret_access_key": "not-a-real-secret",
        }
        adding = asyncio.create_task(
            client.create(tenant, "slow", "s3", config, probe=True, timeout=30)
        )
        for _ in range(100):
            asked = await requests(js, tenant)
            if asked:
                break
            await asyncio.sleep(0.05)
        [request] = asked
        # While it is tested it is nowhere to be seen, and no upload can be granted it.
        assert (await client.list(tenant)).destinations == []
        assert (await client.get(tenant, name="slow")).problem.status == 404
        assert await pending_rows(database_url) == 1
        rid, job = await announced_job(js, tenant, request.destination_id)
        reply, grant = await client.grant(
            job_id=job, recording_id=rid, tenant_id=tenant, destination_id=request.destination_id
        )
        assert grant is None and reply.problem is not None and reply.problem.status == 404
        added = await adding
        assert added.destination is None and added.problem is not None
        assert added.problem.status == 504 and "did not answer within 4 s" in added.problem.message
        assert (await client.list(tenant)).destinations == []
        assert await pending_rows(database_url) == 0
        # The uploader did hold the test's own grant meanwhile.
        audit = await natsio.read_subject(
            js, vault_events.STREAM, f"vault.{request.recording_id}.>"
        )
        assert any(isinstance(e, vault_events.GrantIssued) and e.probe for _, e in audit)
    finally:
        vault.stop()


async def test_without_an_uploader_an_add_fails_clearly_and_stores_nothing(
    tmp_path: Path, nats_server: NatsServer, database_url: str, nc: NATS
) -> None:
    vault = start_vault(tmp_path, nats_server.url, database_url, probe_timeout_s="1")
    try:
        await wait_ready(nc, vault)
        client = VaultClient(nc)
        tenant = new_tenant_id()
        config = {"path": str(tmp_path / "remote")}
        reply = await client.create(tenant, "lonely", "file", config, probe=True, timeout=20)
        assert reply.destination is None and reply.problem is not None
        assert reply.problem.status == 504, reply.problem
        assert "no uploader ran it within 3.5 s" in reply.problem.message
        assert "--no-probe" in reply.problem.message
        assert (await client.list(tenant)).destinations == []
        assert await pending_rows(database_url) == 0
    finally:
        vault.stop()


async def test_a_probe_runs_with_each_service_s_own_nats_rights(
    tmp_path: Path, database_url: str
) -> None:
    """As ``resguardo up`` runs it: the vault, the uploader and the API (here a client) logged in
    as their own NATS users; a probe needs no right beyond the ones they have."""
    passwords = {user: secrets.token_urlsafe(24) for user in (*SERVICE_RIGHTS, OPERATOR)}
    log = (tmp_path / "nats-secured.log").open("wb")
    server = NatsServer(tmp_path / "nats-secured", users=system_users(passwords), log=log).start()
    procs: list[ServiceProcess] = []
    api = None
    try:
        procs.append(
            start_vault(
                tmp_path,
                server.url,
                database_url,
                nats_user="credentials",
                nats_password=passwords["credentials"],
            )
        )
        backup = tmp_path / "backup"
        backup.mkdir()
        procs.append(
            start_uploader(
                tmp_path,
                server.url,
                backup,
                nats_user="uploader",
                nats_password=passwords["uploader"],
            )
        )
        api = await natsio.connect(
            server.url, name="test-api", user="api", password=passwords["api"]
        )
        await wait_ready(api, procs[0])
        client = VaultClient(api)
        tenant = new_tenant_id()
        root = tmp_path / "remote"
        reply = await client.create(
            tenant, "secured", "file", {"path": str(root)}, probe=True, timeout=40
        )
        assert reply.destination is not None, reply.problem
        tested = await rpc(
            api, SUBJECT_TEST, DestinationQuery(tenant_id=tenant, name="secured"), ProbeReply, 40
        )
        assert tested.problem is None and tested.probe is not None, tested.problem
        for proc in procs:
            assert "permissions violation" not in proc.log_path.read_text().lower()
    finally:
        if api is not None:
            await api.close()
        for proc in procs:
            proc.stop()
        server.stop()
        log.close()
