"""One-shot grants: only for a real upload job, once, to the recording's tenant and destination."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import asyncpg
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import sealedbox, vault_rpc
from shared.embedded import NatsServer
from shared.events import vault as vault_events
from shared.ids import new_recording_id, new_tenant_id
from tests.servers import ServiceProcess

from .helpers import (
    VaultClient,
    announced_job,
    publish_attempt,
    publish_resend,
    publish_started,
    rpc,
    start_vault,
    wait_ready,
)

CANARY = "CANARY-grant-0b5e2c71"


async def make_destination(client: VaultClient, tenant: str, name: str) -> str:
    reply = await client.create(
        tenant,
        name,
        "s3",
        {
            "bucket": "b-" + name,
            "access_key_id": "AKIDGRANT",
            "secret_access_key": CANARY,
            "persist_backup": True,
        },
    )
    assert reply.destination is not None, reply.problem
    return reply.destination.destination_id


async def audit(js: JetStreamContext, rid: str) -> list[tuple[bytes, object]]:
    sub = await js.subscribe(f"vault.{rid}.>", ordered_consumer=True)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            out.append((msg.data, msgspec.json.decode(msg.data, type=vault_events.VaultEvent)))
    finally:
        await sub.unsubscribe()
    return out


async def test_rpc_subjects_are_never_stored_in_a_stream(js: JetStreamContext) -> None:
    # Requests carry sealed configs: no stream may capture them (and a stream's publish ack
    # would answer the request before the vault does).
    for subject in (
        vault_rpc.SUBJECT_PUBLIC_KEY,
        vault_rpc.SUBJECT_CREATE,
        vault_rpc.SUBJECT_LIST,
        vault_rpc.SUBJECT_GET,
        vault_rpc.SUBJECT_DELETE,
        vault_rpc.SUBJECT_GRANT,
    ):
        with pytest.raises(NotFoundError):
            await js.find_stream_name_by_subject(subject)


async def test_grant_once_for_a_real_job_and_refusals(
    client: VaultClient, js: JetStreamContext, vault_proc: ServiceProcess
) -> None:
    tenant, other_tenant = new_tenant_id(), new_tenant_id()
    dest = await make_destination(client, tenant, "main")
    spare = await make_destination(client, tenant, "spare")
    foreign = await make_destination(client, other_tenant, "theirs")
    rid, job = await announced_job(js, tenant, dest)

    reply, grant = await client.grant(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest
    )
    assert reply.problem is None and grant is not None
    assert grant.provider == "s3"
    assert grant.secret == {"access_key_id": "AKIDGRANT", "secret_access_key": CANARY}
    assert grant.config == {"bucket": "b-main", "persist_backup": True}

    async def refused(status: int, **kw: str) -> str:
        args = {"job_id": job, "recording_id": rid, "tenant_id": tenant, "destination_id": dest}
        args.update(kw)
        reply, grant = await client.grant(
            job_id=args["job_id"],
            recording_id=args["recording_id"],
            tenant_id=args["tenant_id"],
            destination_id=args["destination_id"],
        )
        assert grant is None and reply.sealed == b""
        assert reply.problem is not None, args
        assert reply.problem.status == status, reply.problem
        assert CANARY not in reply.problem.message
        return reply.problem.message

    assert "already granted" in await refused(409)  # replay of the same job
    assert "no upload attempt" in await refused(403, job_id=f"{rid}:99")  # forged job id
    # A job started for the right destination, asked for another destination of the tenant.
    assert "neither" in await refused(403, destination_id=spare)
    # The recording's tenant differs from the requester's (and the foreign destination).
    assert "does not belong" in await refused(403, tenant_id=other_tenant, destination_id=foreign)
    assert "never started" in await refused(404, recording_id=new_recording_id())
    assert "valid recording id" in await refused(422, recording_id="rec_x.>")

    # The sealed grant opens only with the job's own key and context.
    key = X25519PrivateKey.generate()
    job2 = f"{rid}:2"
    await publish_attempt(js, rid, tenant, dest, job2)
    reply, _ = await client.grant(
        job_id=job2, recording_id=rid, tenant_id=tenant, destination_id=dest, key=key
    )
    assert reply.sealed
    with pytest.raises(sealedbox.SealError):
        sealedbox.open_sealed(key, reply.sealed, vault_rpc.grant_context(job))
    with pytest.raises(sealedbox.SealError):
        sealedbox.open_sealed(
            X25519PrivateKey.generate(), reply.sealed, vault_rpc.grant_context(job2)
        )

    events = await audit(js, rid)
    issued = [e for _, e in events if isinstance(e, vault_events.GrantIssued)]
    refusals = [e for _, e in events if isinstance(e, vault_events.GrantRefused)]
    assert sorted(e.job_id for e in issued) == [job, job2]
    assert all(e.tenant_id == tenant and e.destination_id == dest for e in issued)
    assert len(refusals) >= 4  # the ones for this (valid) recording id
    assert {e.job_id for e in refusals} >= {job, f"{rid}:99"}
    for raw, _ in events:
        assert CANARY.encode() not in raw and b"AKIDGRANT" not in raw
    log = vault_proc.log_path.read_text()
    assert "grant issued" in log and "grant refused" in log
    assert CANARY not in log and "AKIDGRANT" not in log


async def test_resend_destination_is_granted(client: VaultClient, js: JetStreamContext) -> None:
    tenant = new_tenant_id()
    dest = await make_destination(client, tenant, "first")
    second = await make_destination(client, tenant, "second")
    rid = new_recording_id()
    await publish_started(js, rid, tenant, dest)
    job = f"{rid}:resend:1"
    await publish_attempt(js, rid, tenant, second, job)
    reply, _ = await client.grant(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=second
    )
    assert reply.problem is not None and reply.problem.status == 403  # no resend asked yet
    await publish_resend(js, rid, tenant, second)
    job2 = f"{rid}:resend:2"
    await publish_attempt(js, rid, tenant, second, job2)
    reply, grant = await client.grant(
        job_id=job2, recording_id=rid, tenant_id=tenant, destination_id=second
    )
    assert reply.problem is None and grant is not None and grant.config["bucket"] == "b-second"


async def test_deleted_destination_is_not_granted(
    client: VaultClient, js: JetStreamContext
) -> None:
    tenant = new_tenant_id()
    dest = await make_destination(client, tenant, "gone")
    rid, job = await announced_job(js, tenant, dest)
    assert (await client.delete(tenant, destination_id=dest)).destination is not None
    reply, grant = await client.grant(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest
    )
    assert grant is None and reply.problem is not None and reply.problem.status == 404


async def test_malformed_request_gets_a_problem(client: VaultClient) -> None:
    reply = await rpc(client.nc, vault_rpc.SUBJECT_GRANT, {"job_id": 3}, vault_rpc.GrantReply)
    assert reply.problem is not None and reply.problem.status == 400
    reply2 = await rpc(
        client.nc, vault_rpc.SUBJECT_GET, {"tenant_id": new_tenant_id()}, vault_rpc.DestinationReply
    )
    assert reply2.problem is not None and reply2.problem.status == 422


async def test_master_key_rotation_keeps_old_rows_readable(
    tmp_path: Path, nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    v1, v2 = base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(32)).decode()
    old = start_vault(tmp_path, nats_server.url, database_url, "old", master_keys=f"1:{v1}")
    try:
        await wait_ready(nc, old)
        tenant = new_tenant_id()
        first = await make_destination(VaultClient(nc), tenant, "before")
    finally:
        old.stop()
    new = start_vault(tmp_path, nats_server.url, database_url, "new", master_keys=f"1:{v1},2:{v2}")
    try:
        await wait_ready(nc, new)
        client = VaultClient(nc)
        second = await make_destination(client, tenant, "after")
        conn = await asyncpg.connect(database_url)
        try:
            versions = dict(
                await conn.fetch("SELECT destination_id, key_version FROM vault.destinations")
            )
        finally:
            await conn.close()
        assert versions == {first: 1, second: 2}
        rid, job = await announced_job(js, tenant, first)
        reply, grant = await client.grant(
            job_id=job, recording_id=rid, tenant_id=tenant, destination_id=first
        )
        assert reply.problem is None and grant is not None
        assert grant.secret["secret_access_key"] == CANARY
        assert v1 not in new.log_path.read_text() and v2 not in new.log_path.read_text()
    finally:
        new.stop()


async def test_a_low_order_public_key_is_refused_and_the_job_stays_grantable(
    client: VaultClient, js: JetStreamContext
) -> None:
    tenant = new_tenant_id()
    dest = await make_destination(client, tenant, "loworder")
    rid, job = await announced_job(js, tenant, dest)
    bad = vault_rpc.GrantRequest(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest, public_key=bytes(32)
    )
    reply = await rpc(client.nc, vault_rpc.SUBJECT_GRANT, bad, vault_rpc.GrantReply)
    assert not reply.sealed and reply.problem is not None
    assert reply.problem.status == 422 and "public_key" in reply.problem.message
    # Nothing was released, so nothing is audited as issued and the job can still be granted.
    reply, grant = await client.grant(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest
    )
    assert reply.problem is None and grant is not None
    kinds = [type(e).__name__ for _, e in await audit(js, rid)]
    assert kinds.count("GrantIssued") == 1 and "GrantRefused" in kinds
