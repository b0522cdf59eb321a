"""Several vault processes in one queue group: a grant stays once-only across all of them, since
the lock is the VAULT stream (first message on the job's subject), not any one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared.embedded import NatsServer
from shared.events import vault as vault_events
from shared.ids import new_tenant_id
from tests.servers import ServiceProcess

from .helpers import VaultClient, announced_job, start_vault, wait_ready

REQUESTS = 20


@pytest.fixture
async def two_vaults(
    tmp_path: Path, nats_server: NatsServer, database_url: str, nc: NATS
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    first = start_vault(tmp_path, nats_server.url, database_url, name="vault-a")
    try:
        await wait_ready(nc, first)
        # The second instance shares the first one's keys (as replicas would share a secret),
        # so either can open what was sealed to the other and decrypt the other's rows.
        keys = tmp_path / "vault-a-data" / "keys"
        second = start_vault(
            tmp_path,
            nats_server.url,
            database_url,
            name="vault-b",
            master_key_file=keys / "master.keys",
            vault_key_file=keys / "vault-x25519.key",
        )
        try:
            # Any answer may come from the first one: the second says in its log when it has
            # subscribed (it logs "vault ready" after its queue subscriptions are flushed).
            await wait_ready(nc, second)
            await _logged(second, "vault ready")
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


async def _events(js: JetStreamContext, rid: str, kind: str) -> int:
    info = await js.stream_info(vault_events.STREAM.name, subjects_filter=f"vault.{rid}.>")
    subjects = info.state.subjects or {}
    # vault.<rid>.grant_issued.<job token>, vault.<rid>.grant_refused
    return sum(n for s, n in subjects.items() if s.split(".")[2] == kind)


async def _job(client: VaultClient, js: JetStreamContext, name: str) -> tuple[str, str, str, str]:
    tenant = new_tenant_id()
    created = await client.create(tenant, name, "file", {"path": "/tmp/resguardo-many-vaults"})
    assert created.destination is not None, created.problem
    dest = created.destination.destination_id
    rid, job = await announced_job(js, tenant, dest)
    return tenant, dest, rid, job


def _log(proc: ServiceProcess) -> str:
    return proc.log_path.read_text(errors="replace")


def _answers(proc: ServiceProcess, job: str) -> int:
    """How many grant requests for ``job`` this instance answered (it logs each outcome)."""
    return sum(
        1
        for line in _log(proc).splitlines()
        if job in line and ("grant issued" in line or "grant refused" in line)
    )


async def _logged(proc: ServiceProcess, text: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while text not in _log(proc):
        if not proc.alive() or loop.time() > deadline:
            raise AssertionError(f"{proc.log_path.name} never logged {text!r}:\n{_log(proc)}")
        await asyncio.sleep(0.05)


async def test_one_grant_per_job_across_two_vaults(
    two_vaults: tuple[ServiceProcess, ServiceProcess], nc: NATS, js: JetStreamContext
) -> None:
    first, second = two_vaults
    client = VaultClient(nc)
    tenant, dest, rid, job = await _job(client, js, "once")

    replies = await asyncio.gather(
        *(
            client.grant(job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest)
            for _ in range(REQUESTS)
        )
    )
    granted = [grant for _, grant in replies if grant is not None]
    refused = [reply.problem for reply, grant in replies if grant is None]
    assert len(granted) == 1, [r.problem for r, _ in replies]
    assert granted[0].provider == "file"
    assert len(refused) == REQUESTS - 1
    assert all(p is not None and p.status == 409 for p in refused), refused
    assert await _events(js, rid, "grant_issued") == 1
    assert await _events(js, rid, "grant_refused") == REQUESTS - 1

    # The requests really were spread over both instances (the queue group picks at random:
    # all 20 on one of two is a 1 in 2**19 chance) and both took part in the race.
    # ("grant issued" is logged just after the reply leaves, so wait for the count to settle.)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while sum(answered := [_answers(p, job) for p in (first, second)]) < REQUESTS:
        assert loop.time() < deadline, answered
        await asyncio.sleep(0.05)
    assert sum(answered) == REQUESTS and all(n > 0 for n in answered), answered
    for proc in (first, second):
        text = _log(proc)
        assert "Traceback" not in text and '"level": "error"' not in text, text[-3000:]


async def test_two_jobs_granted_at_once_across_two_vaults(
    two_vaults: tuple[ServiceProcess, ServiceProcess], nc: NATS, js: JetStreamContext
) -> None:
    client = VaultClient(nc)
    jobs = [await _job(client, js, f"dest-{i}") for i in range(2)]
    replies = await asyncio.gather(
        *(
            client.grant(job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest)
            for tenant, dest, rid, job in jobs
            for _ in range(REQUESTS // 2)
        )
    )
    for i, (_, _, rid, _) in enumerate(jobs):
        mine = replies[i * (REQUESTS // 2) : (i + 1) * (REQUESTS // 2)]
        assert sum(grant is not None for _, grant in mine) == 1, [r.problem for r, _ in mine]
        assert all(r.problem is not None and r.problem.status == 409 for r, g in mine if g is None)
        assert await _events(js, rid, "grant_issued") == 1
