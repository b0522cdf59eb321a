"""Leases in the JetStream KV bucket, against a real nats-server (shared.leases)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from shared import leases, natsio
from shared.embedded import OPERATOR, SERVICE_RIGHTS, NatsServer, system_users
from shared.ids import new_recording_id
from shared.leases import LeaseHeld, LeaseLost


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def key() -> str:
    return f"transcode.{new_recording_id()}"


async def test_the_bucket_is_declared_idempotently(js: JetStreamContext) -> None:
    first = await leases.ensure_bucket(js)
    again = await leases.ensure_bucket(js)
    assert first._stream == again._stream == "KV_LEASES"
    info = await js.stream_info("KV_LEASES")
    assert info.config.max_msgs_per_subject == 1
    assert info.config.storage == nats.js.api.StorageType.FILE


async def test_two_concurrent_acquirers_exactly_one_wins(js: JetStreamContext) -> None:
    kv = await leases.ensure_bucket(js)
    for _ in range(5):
        k = key()
        results = await asyncio.gather(
            *(leases.acquire(kv, k, f"h{i}", 30) for i in range(8)), return_exceptions=True
        )
        won = [r for r in results if isinstance(r, leases.Lease)]
        assert len(won) == 1, results
        assert all(isinstance(r, LeaseHeld) for r in results if r is not won[0])
        assert all(r.holder == won[0].holder for r in results if isinstance(r, LeaseHeld))


async def test_concurrent_takeovers_of_an_expired_lease_exactly_one_wins(
    js: JetStreamContext,
) -> None:
    kv = await leases.ensure_bucket(js)
    clock = Clock()
    k = key()
    await leases.acquire(kv, k, "old", 10, clock=clock)
    clock.now += 11
    results = await asyncio.gather(
        *(leases.acquire(kv, k, f"new{i}", 10, clock=clock) for i in range(8)),
        return_exceptions=True,
    )
    assert len([r for r in results if isinstance(r, leases.Lease)]) == 1, results


async def test_a_live_lease_is_refused_and_an_expired_one_taken_over(
    js: JetStreamContext,
) -> None:
    kv = await leases.ensure_bucket(js)
    clock = Clock()
    k = key()
    first = await leases.acquire(kv, k, "first", 10, clock=clock)
    clock.now += 9
    with pytest.raises(LeaseHeld) as held:
        await leases.acquire(kv, k, "second", 10, clock=clock)
    assert held.value.holder == "first" and 0 < held.value.expires_in <= 1
    await first.renew()  # renewed: live for another 10 s
    clock.now += 9
    with pytest.raises(LeaseHeld):
        await leases.acquire(kv, k, "second", 10, clock=clock)
    clock.now += 2
    second = await leases.acquire(kv, k, "second", 10, clock=clock)
    assert second.holder == "second"
    stored = leases.Record.decode((await kv.get(k)).value)
    assert stored == leases.Record("second", clock.now + 10, 0)
    # The first holder finds out when it renews, and never gets it back.
    with pytest.raises(LeaseLost):
        await first.renew()
    assert first.lost
    with pytest.raises(LeaseLost):
        first.check()
    await first.release()  # a lost lease is not ours to delete
    assert leases.Record.decode((await kv.get(k)).value) == stored
    await second.renew()
    assert leases.Record.decode((await kv.get(k)).value).renewals == 1  # type: ignore[union-attr]


async def test_a_lease_that_ran_out_is_lost_even_before_anyone_takes_it(
    js: JetStreamContext,
) -> None:
    kv = await leases.ensure_bucket(js)
    clock = Clock()
    lease = await leases.acquire(kv, key(), "me", 10, clock=clock)
    clock.now += 10
    with pytest.raises(LeaseLost):
        await lease.confirm()


async def test_release_frees_it_and_it_can_be_acquired_again(js: JetStreamContext) -> None:
    kv = await leases.ensure_bucket(js)
    k = key()
    lease = await leases.acquire(kv, k, "a", 30)
    await lease.release()
    with pytest.raises(LeaseLost):
        await lease.renew()
    again = await leases.acquire(kv, k, "b", 30)  # over the delete marker
    assert again.holder == "b"


async def test_hold_renews_in_the_background_and_releases(js: JetStreamContext) -> None:
    kv = await leases.ensure_bucket(js)
    k = key()
    async with leases.hold(kv, k, "holder", 0.6) as lease:
        await asyncio.sleep(1.5)  # longer than the ttl: only renewals keep it
        lease.check()
        assert lease.record.renewals >= 3
        with pytest.raises(LeaseHeld):
            await leases.acquire(kv, k, "other", 0.6)
    other = await leases.acquire(kv, k, "other", 0.6)
    assert other.holder == "other"


async def test_hold_notices_a_takeover(js: JetStreamContext) -> None:
    kv = await leases.ensure_bucket(js)
    clock = Clock()
    k = key()
    async with leases.hold(kv, k, "slow", 0.3, clock=clock) as lease:
        clock.now += 1  # it "slept" past its ttl, and another holder came
        await leases.acquire(kv, k, "fast", 30, clock=clock)
        await asyncio.sleep(0.3)
        assert lease.lost
        with pytest.raises(LeaseLost):
            await lease.confirm()
    stored = leases.Record.decode((await kv.get(k)).value)
    assert stored is not None and stored.holder == "fast"  # not released by the loser


# -- the embedded server's per-service users ------------------------------------------------------
PASSWORDS = {user: secrets.token_urlsafe(24) for user in (*SERVICE_RIGHTS, OPERATOR)}


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[NatsServer]:
    log = (tmp_path / "nats-secured.log").open("wb")
    server = NatsServer(tmp_path / "nats-secured", users=system_users(PASSWORDS), log=log).start()
    try:
        yield server
    finally:
        server.stop()
        log.close()


@pytest.mark.parametrize("user", ["transcoder", "uploader"])
async def test_the_services_users_can_use_the_lease_bucket(
    secured_nats: NatsServer, user: str
) -> None:
    nc = await natsio.connect(secured_nats.url, name=user, user=user, password=PASSWORDS[user])
    try:
        js = nc.jetstream(timeout=3)
        kv = await leases.ensure_bucket(js)  # the first one creates it, as at a service start
        kv = await leases.ensure_bucket(js)
        k = f"{user}.{new_recording_id()}"
        lease = await leases.acquire(kv, k, "me", 30)
        await lease.renew()
        with pytest.raises(LeaseHeld):
            await leases.acquire(kv, k, "other", 30)
        await lease.release()
        await leases.acquire(kv, k, "other", 30)
    finally:
        await nc.close()
