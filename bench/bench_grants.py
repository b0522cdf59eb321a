"""One-shot credential grants: real ``rpc.vault.grant`` round trips to a real vault process,
side by side with a raw NATS request/reply echo on the same server in the same run.

Setup (not timed): an embedded nats-server with the per-service users of ``resguardo up``, an
embedded PostgreSQL, the vault (``python -m services.credentials``, logging at INFO as in
production) and an echo responder (a separate process too). The vault is one Python thread, so
it uses at most one core; its CPU time per grant is measured too (``/proc/<pid>/stat``), which
gives grants per second per core. (Pinning both to one CPU was tried: with nats-server and
PostgreSQL also scheduled there, loopback sends got several times slower; not pinned.)
One destination; for every grant a recording is started and an upload attempt announced, so
each request is a genuine, never-granted job. The vault checks both events (copied into its
memory as JetStream stores them, else read from the stream), reads the destination row (cached
until PostgreSQL announces a change), decrypts, seals to the request's fresh X25519 key and
publishes the audit event, which is also the job's once-only lock, before it replies. For the
sequential grants each job is announced just before its request, as the uploader does.

Timed: the request/reply round trip as the uploader sees it (the X25519 key is made before).
Sequential round trips give p50/p99 latency; many in flight give grants per second.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

SEQUENTIAL = 1500
CONCURRENT = 6000
IN_FLIGHT = 32
WARMUP = 200
ECHO_SUBJECT = "bench.echo"

ECHO_SERVER = """
import asyncio, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1], user="operator", password=sys.argv[2])
    async def echo(msg):
        await msg.respond(msg.data)
    await nc.subscribe(sys.argv[3], cb=echo)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sequential(
    call: Callable[[int], Awaitable[None]],
    n: int,
    offset: int,
    before: Callable[[int], Awaitable[None]] | None = None,
) -> list[float]:
    out = []
    for i in range(n):
        if before is not None:
            await before(offset + i)  # not timed
        t0 = time.perf_counter()
        await call(offset + i)
        out.append(time.perf_counter() - t0)
    return out


async def _concurrent(call: Callable[[int], Awaitable[None]], n: int, offset: int) -> float:
    it = iter(range(offset, offset + n))

    async def worker() -> None:
        for i in it:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return time.perf_counter() - t0


def run() -> list[dict[str, object]]:
    from shared.embedded import (
        OPERATOR,
        SERVICE_RIGHTS,
        NatsServer,
        Postgres,
        python_env,
        system_users,
    )

    repo = Path(__file__).resolve().parent.parent
    passwords = {u: secrets.token_urlsafe(24) for u in (*SERVICE_RIGHTS, OPERATOR)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(tmp / "nats", users=system_users(passwords)).start()
        pg = Postgres(tmp / "pg").start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            env = python_env() | {
                "RESGUARDO_NATS_URL": server.url,
                "RESGUARDO_NATS_USER": "credentials",
                "RESGUARDO_NATS_PASSWORD": passwords["credentials"],
                "RESGUARDO_DATABASE_URL": pg.url,
                "RESGUARDO_DATA_DIR": str(tmp / "data"),
                "PYTHONPATH": str(repo),
            }
            log = (tmp / "vault.log").open("wb")
            vault = subprocess.Popen(
                [sys.executable, "-m", "services.credentials"],
                cwd=repo,
                env=env,
                stdout=log,
                stderr=log,
            )
            procs.append(vault)
            echo = subprocess.Popen(
                [sys.executable, "-c", ECHO_SERVER, server.url, passwords[OPERATOR], ECHO_SUBJECT],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            procs.append(echo)
            assert echo.stdout is not None
            echo.stdout.readline()
            return asyncio.run(_measure(server.url, passwords, vault.pid))
        finally:
            for p in procs:
                p.terminate()
                p.wait(15)
            pg.stop()
            server.stop()


async def _measure(url: str, passwords: dict[str, str], vault_pid: int) -> list[dict[str, object]]:
    import msgspec
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from shared import natsio, sealedbox, vault_rpc
    from shared.embedded import OPERATOR
    from shared.events import event_id, now
    from shared.events import recordings as rec_events
    from shared.events import uploads as up_events
    from shared.ids import new_recording_id, new_tenant_id

    total = WARMUP + SEQUENTIAL + CONCURRENT

    async def login(user: str) -> natsio.NATS:
        return await natsio.connect(url, name=f"bench-{user}", user=user, password=passwords[user])

    api, uploader, operator = (
        await login("api"),
        await login("uploader"),
        await login(OPERATOR),
    )
    for _ in range(300):  # the vault is up when it answers
        try:
            msg = await api.request(vault_rpc.SUBJECT_PUBLIC_KEY, b"", timeout=0.5)
            break
        except Exception:
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError("the vault did not start; see its log")
    vault_pub = msgspec.json.decode(msg.data, type=vault_rpc.VaultKeyReply).public_key
    tenant = new_tenant_id()
    config = msgspec.json.encode(
        {
            "bucket": "bench",
            "access_key_id": "AKIDBENCH",
            "secret_access_key": secrets.token_urlsafe(30),
        }
    )
    create = vault_rpc.DestinationCreate(
        tenant_id=tenant,
        name="bench",
        provider="s3",
        sealed_config=sealedbox.seal(vault_pub, config, vault_rpc.create_context(tenant, "bench")),
        probe=False,
    )
    msg = await api.request(vault_rpc.SUBJECT_CREATE, msgspec.json.encode(create), timeout=10)
    created = msgspec.json.decode(msg.data, type=vault_rpc.DestinationReply)
    assert created.destination is not None, created.problem
    dest = created.destination.destination_id

    # Every grant gets its own recording (not timed) and its own job, announced (not timed) as
    # the uploader does: just before the sequential grants, all at once for the concurrent ones.
    rids = [new_recording_id() for _ in range(total)]
    ajs, ujs = api.jetstream(), uploader.jetstream()
    sem = asyncio.Semaphore(256)

    async def start(rid: str) -> None:
        async with sem:
            await natsio.publish(
                ajs,
                rec_events.RecordingStarted(
                    event_id=event_id(rid, "started"),
                    recording_id=rid,
                    tenant_id=tenant,
                    occurred_at=now(),
                    destination_id=dest,
                    destination_name="bench",
                    whip_token_sha256="0" * 64,
                ),
            )

    async def announce(i: int) -> None:
        rid = rids[i]
        async with sem:
            await natsio.publish(
                ujs,
                up_events.UploadAttemptStarted(
                    event_id=event_id(rid, "attempt_started", f"{rid}:1"),
                    recording_id=rid,
                    tenant_id=tenant,
                    occurred_at=now(),
                    job_id=f"{rid}:1",
                    attempt=1,
                    destination_id=dest,
                ),
            )

    await asyncio.gather(*(start(r) for r in rids))
    await asyncio.gather(*(announce(i) for i in range(WARMUP + SEQUENTIAL, total)))
    requests = [
        msgspec.json.encode(
            vault_rpc.GrantRequest(
                job_id=f"{rid}:1",
                recording_id=rid,
                tenant_id=tenant,
                destination_id=dest,
                public_key=sealedbox.public_bytes(X25519PrivateKey.generate()),
            )
        )
        for rid in rids
    ]
    headers = {"Resguardo-Service": "uploader"}
    refused = 0

    async def grant(i: int) -> None:
        nonlocal refused
        msg = await uploader.request(
            vault_rpc.SUBJECT_GRANT, requests[i], timeout=10, headers=headers
        )
        reply = msgspec.json.decode(msg.data, type=vault_rpc.GrantReply)
        if reply.problem is not None or not reply.sealed:
            refused += 1

    async def echo_call(i: int) -> None:
        await operator.request(ECHO_SUBJECT, requests[i], timeout=10)

    ojs = operator.jetstream()
    audit_like = b"x" * 300

    async def durable_publish(i: int) -> None:
        # What each grant waits for before it replies: one fsync'd JetStream write.
        await ojs.publish(
            "vault.rec_000000000000000000000000.grant_issued",
            audit_like,
            headers={"Nats-Msg-Id": f"bench-{i}"},
        )

    # Warm both paths, then alternate so neither gets a quieter machine.
    await _sequential(grant, WARMUP, 0, before=announce)
    await _sequential(echo_call, WARMUP, 0)
    seq_grant = await _sequential(grant, SEQUENTIAL, WARMUP, before=announce)
    seq_echo = await _sequential(echo_call, SEQUENTIAL, WARMUP)
    off = WARMUP + SEQUENTIAL
    cpu0 = _cpu_seconds(vault_pid)
    conc_grant = await _concurrent(grant, CONCURRENT, off)
    vault_cpu = (_cpu_seconds(vault_pid) - cpu0) / CONCURRENT
    conc_echo = await _concurrent(echo_call, CONCURRENT, off)
    seq_floor = await _sequential(durable_publish, SEQUENTIAL, 0)
    conc_floor = await _concurrent(durable_publish, CONCURRENT, SEQUENTIAL)
    if refused:
        raise RuntimeError(f"{refused} grants were refused; see the vault's log")
    for nc in (api, uploader, operator):
        await nc.close()

    g50, g99 = _pct(seq_grant, 0.50), _pct(seq_grant, 0.99)
    e50, e99 = _pct(seq_echo, 0.50), _pct(seq_echo, 0.99)
    f50, f99 = _pct(seq_floor, 0.50), _pct(seq_floor, 0.99)
    grant_rate, echo_rate = CONCURRENT / conc_grant, CONCURRENT / conc_echo
    floor_rate = CONCURRENT / conc_floor
    ms = 1000.0
    note = "one vault process"
    return [
        {
            "name": f"vault grant round trip p50, sequential ({note})",
            "ours": f"{g50 * ms:.2f} ms",
            "baseline": f"{e50 * ms:.2f} ms (NATS request/reply echo)",
            "ratio": g50 / e50,
            "goal": "p99 < 2 ms",
        },
        {
            "name": "vault grant round trip p99, sequential",
            "ours": f"{g99 * ms:.2f} ms (mean {statistics.fmean(seq_grant) * ms:.2f})",
            "baseline": f"{e99 * ms:.2f} ms (echo)",
            "ratio": g99 / e99,
            "goal": "< 2 ms",
        },
        {
            "name": f"vault grants per second, {IN_FLIGHT} in flight (ratio: time per request)",
            "ours": f"{grant_rate:,.0f} grants/s",
            "baseline": f"{echo_rate:,.0f} echoes/s",
            "ratio": echo_rate / grant_rate,
            "goal": ">= 2,000 grants/s",
        },
        {
            "name": f"vault CPU per grant, {IN_FLIGHT} in flight (grants per core-second)",
            "ours": f"{vault_cpu * ms:.2f} ms ({1 / vault_cpu:,.0f}/s per core)",
            "baseline": f"{1 / echo_rate * ms:.3f} ms of wall time per echo",
            "ratio": vault_cpu * echo_rate,
            "goal": ">= 2,000 grants/s",
        },
        {
            "name": "the floor: one fsync'd JetStream publish (the audit write), p50 / p99",
            "ours": f"{g50 * ms:.2f} / {g99 * ms:.2f} ms (grant)",
            "baseline": f"{f50 * ms:.2f} / {f99 * ms:.2f} ms, {floor_rate:,.0f}/s (publish)",
            "ratio": g99 / f99,
            "goal": "(reference)",
        },
    ]
