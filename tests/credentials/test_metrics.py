"""The vault's health port: grants counted by outcome and refusal reason, their latency, and
readiness that names the database and the RPC subscriptions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from nats.js import JetStreamContext

from shared.ids import new_recording_id, new_tenant_id
from tests import scrape
from tests.servers import ServiceProcess, wait_until

from .helpers import VaultClient, announced_job
from .test_grant import make_destination


async def test_grants_are_counted_by_outcome_and_reason(
    client: VaultClient, js: JetStreamContext, vault_proc: ServiceProcess, tmp_path: Path
) -> None:
    base = scrape.health_url(tmp_path / "vault-data" / "run", "credentials")
    before = await asyncio.to_thread(scrape.scrape, base)
    assert before.value("resguardo_vault_grants_total", outcome="issued", reason="none") == 0
    assert before.value("resguardo_vault_grant_seconds_count") == 0

    tenant = new_tenant_id()
    dest = await make_destination(client, tenant, "main")
    rid, job = await announced_job(js, tenant, dest)

    async def grant(recording_id: str) -> int:
        reply, _ = await client.grant(
            job_id=job, recording_id=recording_id, tenant_id=tenant, destination_id=dest
        )
        return reply.problem.status if reply.problem else 200

    assert await grant(rid) == 200
    assert await grant(rid) == 409  # the same job again
    assert await grant(new_recording_id()) == 404  # never started

    after = await asyncio.to_thread(scrape.scrape, base)
    assert after.types["resguardo_vault_grants"] == "counter"
    assert after.named("resguardo_vault_grants_total") == {
        frozenset({("outcome", "issued"), ("reason", "none")}): 1,
        frozenset({("outcome", "refused"), ("reason", "already_granted")}): 1,
        frozenset({("outcome", "refused"), ("reason", "not_started")}): 1,
        **{
            frozenset({("outcome", "refused"), ("reason", reason)}): 0
            for reason in (
                "bad_request",
                "wrong_tenant",
                "wrong_destination",
                "no_attempt",
                "no_destination",
                "undecryptable",
            )
        },
        frozenset({("outcome", "failed"), ("reason", "error")}): 0,
    }
    assert after.value("resguardo_vault_grant_seconds_count") == 3
    assert 0 < after.value("resguardo_vault_grant_seconds_sum") < 3
    # Grants are fast: all three under a second, the histogram's top bucket.
    assert after.value("resguardo_vault_grant_seconds_bucket", le="1.0") == 3

    status, state = await asyncio.to_thread(scrape.readiness, base)
    assert status == 200, state
    assert state["checks"] == {
        "nats": "ok",
        "started": "ok",
        "rpc": "ok",
        "database": "ok",
        "consumer vault-shred": "ok",
    }


async def test_readiness_names_the_database_when_it_is_gone(
    client: VaultClient, vault_proc: ServiceProcess, database_url: str, tmp_path: Path
) -> None:
    base = scrape.health_url(tmp_path / "vault-data" / "run", "credentials")
    status, _ = await asyncio.to_thread(scrape.readiness, base)
    assert status == 200
    base_url, _, query = database_url.partition("?")
    prefix, name = base_url.rsplit("/", 1)
    admin = await asyncpg.connect(prefix + "/postgres" + (f"?{query}" if query else ""))
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()

    def unready() -> dict[str, object] | None:
        if not vault_proc.alive():
            raise AssertionError("the vault exited instead of reporting itself unready")
        status, state = scrape.readiness(base)
        return state if status == 503 else None

    state = await asyncio.to_thread(wait_until, unready, 30, 0.2, "the vault to be unready")
    checks = state["checks"]
    assert isinstance(checks, dict)
    assert checks["database"].startswith("PostgreSQL did not answer SELECT 1"), checks
    assert checks["rpc"] == "ok" and checks["nats"] == "ok"
