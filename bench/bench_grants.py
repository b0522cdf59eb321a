"""One-shot credential grants against the vault's own floor: one fsync'd JetStream publish.

Every grant waits for one durable write before it replies (the audit event, which is also the
job's once-only lock), so the floor is that write as a client sees it, measured in the same run
on the same server (``sync_interval: always``): the same bytes and headers as a real audit event
(``Nats-Msg-Id``, ``Nats-Expected-Last-Subject-Sequence: 0``), each on a fresh subject.

Setup (not timed): embedded nats-server (the users of ``resguardo up``) and PostgreSQL, the
vault process (logging at INFO as in production), an echo process. Every grant is a genuine,
never-granted job (its recording started and upload attempt announced; for sequential grants
just before, as the uploader does).

Timed, in ``ROUNDS`` rounds (medians are reported; each ratio is the median of per-round ratios,
both sides measured in that round): sequential grants, echoes and publishes (p50/p99); then
``IN_FLIGHT`` at once: grants to one vault (its CPU time from ``/proc``), publishes, and grants to
two vaults (a second instance, sharing the first one's keys, started for it and stopped after).
``RESGUARDO_BENCH_PROFILE=<dir>`` runs the first vault under cProfile (``<dir>/vault-a.prof``).
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
from typing import Any

from nats.aio.client import Client as NATS

from shared import natsio
from shared.embedded import OPERATOR, SERVICE_RIGHTS, NatsServer, Postgres, python_env, system_users

from .grant_fixtures import AUDIT_SUBJECT, ECHO_SERVER, ECHO_SUBJECT, Jobs, Popen, Vaults

ROUNDS = 5
SEQUENTIAL = 300  # per round and kind
CONCURRENT = 1200  # per round and phase
IN_FLIGHT = 32
WARMUP = 200


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sequential(
    call: Callable[[int], Awaitable[None]],
    ids: range,
    before: Callable[[int], Awaitable[None]] | None = None,
) -> list[float]:
    out = []
    for i in ids:
        if before is not None:
            await before(i)  # not timed
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


async def _concurrent(call: Callable[[int], Awaitable[None]], ids: range) -> float:
    """Calls per second with ``IN_FLIGHT`` at once."""
    it = iter(ids)

    async def worker() -> None:
        for i in it:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return len(ids) / (time.perf_counter() - t0)


def run() -> list[dict[str, object]]:
    repo = Path(__file__).resolve().parent.parent
    passwords = {u: secrets.token_urlsafe(24) for u in (*SERVICE_RIGHTS, OPERATOR)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(tmp / "nats", users=system_users(passwords)).start()
        pg = Postgres(tmp / "pg").start()
        echo: Popen | None = None
        vaults: Vaults | None = None
        try:
            env = python_env() | {
                "RESGUARDO_NATS_URL": server.url,
                "RESGUARDO_NATS_USER": "credentials",
                "RESGUARDO_NATS_PASSWORD": passwords["credentials"],
                "RESGUARDO_DATABASE_URL": pg.url,
                "PYTHONPATH": str(repo),
            }
            vaults = Vaults(tmp, env, repo)
            echo = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    ECHO_SERVER,
                    server.url,
                    passwords[OPERATOR],
                    ECHO_SUBJECT,
                    AUDIT_SUBJECT,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert echo.stdout is not None
            echo.stdout.readline()
            return asyncio.run(_measure(server.url, passwords, vaults))
        finally:
            if echo is not None:
                echo.terminate()
                echo.wait(15)
            if vaults is not None:
                vaults.stop()
            pg.stop()
            server.stop()


async def _measure(url: str, passwords: dict[str, str], vaults: Vaults) -> list[dict[str, object]]:
    async def login(user: str) -> NATS:
        return await natsio.connect(url, name=f"bench-{user}", user=user, password=passwords[user])

    api, uploader, operator = await login("api"), await login("uploader"), await login(OPERATOR)
    jobs = await Jobs.create(api, uploader)
    ojs = operator.jetstream()
    floor_msgs = jobs.audit_like(ROUNDS * (SEQUENTIAL + 2 * CONCURRENT) + 1000)

    async def echo_call(i: int) -> None:
        await operator.request(ECHO_SUBJECT, jobs.requests[i % len(jobs.requests)], timeout=10)

    async def audit_then_reply(i: int) -> None:
        await operator.request(AUDIT_SUBJECT, jobs.requests[i % len(jobs.requests)], timeout=10)

    async def durable_publish(i: int) -> None:
        # What each grant waits for before it replies: one fsync'd JetStream write.
        subject, data, headers = floor_msgs[i]
        await ojs.publish(subject, data, headers=headers)

    rounds: list[dict[str, Any]] = []
    nxt, pub = 0, 0

    def take(n: int) -> range:
        nonlocal nxt
        nxt += n
        return range(nxt - n, nxt)

    def take_pub(n: int) -> range:
        nonlocal pub
        pub += n
        return range(pub - n, pub)

    await jobs.add(WARMUP)
    await _sequential(jobs.grant, take(WARMUP), before=jobs.announce)
    await _sequential(echo_call, range(WARMUP))
    await _sequential(durable_publish, take_pub(WARMUP))
    await _sequential(audit_then_reply, range(WARMUP))
    for r in range(ROUNDS):
        res: dict[str, Any] = {}
        await jobs.add(SEQUENTIAL + CONCURRENT)
        res["grant"] = await _sequential(jobs.grant, take(SEQUENTIAL), before=jobs.announce)
        res["echo"] = await _sequential(echo_call, range(SEQUENTIAL))
        res["floor"] = await _sequential(durable_publish, take_pub(SEQUENTIAL))
        res["audited"] = await _sequential(audit_then_reply, range(SEQUENTIAL))
        batch = take(CONCURRENT)
        await jobs.announce_all(batch)
        cpu0 = _cpu_seconds(vaults.first.pid)
        res["rate1"] = await _concurrent(jobs.grant, batch)
        res["cpu"] = (_cpu_seconds(vaults.first.pid) - cpu0) / CONCURRENT
        res["floor_rate"] = await _concurrent(durable_publish, take_pub(CONCURRENT))
        res["echo_rate"] = await _concurrent(echo_call, range(CONCURRENT))
        res["audited_rate"] = await _concurrent(audit_then_reply, range(CONCURRENT))
        await vaults.start_second()
        await jobs.add(CONCURRENT)
        batch = take(CONCURRENT)
        await jobs.announce_all(batch)  # after it started: it copies these facts as they come
        res["rate2"] = await _concurrent(jobs.grant, batch)
        vaults.stop_second()
        rounds.append(res)
        print(f"  round {r + 1}/{ROUNDS} done", file=sys.stderr, flush=True)
    if jobs.refused:
        raise RuntimeError(f"{jobs.refused} grants were refused; see the vault's log")
    for nc in (api, uploader, operator):
        await nc.close()
    return _rows(rounds)


def _rows(rounds: list[dict[str, Any]]) -> list[dict[str, object]]:
    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(r) for r in rounds)

    def p(key: str, q: float) -> float:
        return med(lambda r: _pct(r[key], q) * 1000.0)  # ms

    def row(name: str, ours: str, baseline: str, ratio: float, goal: str) -> dict[str, object]:
        return {"name": name, "ours": ours, "baseline": baseline, "ratio": ratio, "goal": goal}

    rate1, rate2 = med(lambda r: r["rate1"]), med(lambda r: r["rate2"])
    floor_rate, echo_rate = med(lambda r: r["floor_rate"]), med(lambda r: r["echo_rate"])
    cpu, a_rate = med(lambda r: r["cpu"]), med(lambda r: r["audited_rate"])
    return [
        row(
            f"vault grant p99, sequential (medians of {len(rounds)} rounds of {SEQUENTIAL})",
            f"{p('grant', 0.99):.2f} ms (p50 {p('grant', 0.5):.2f})",
            f"{p('floor', 0.99):.2f} ms (p50 {p('floor', 0.5):.2f}): one fsync'd JetStream publish",
            med(lambda r: _pct(r["grant"], 0.99) / _pct(r["floor"], 0.99)),
            "<= 1.5x",
        ),
        row(
            "vault grant p99, sequential, against publish-then-reply (no checks, crypto)",
            f"{p('grant', 0.99):.2f} ms",
            f"{p('audited', 0.99):.2f} ms (p50 {p('audited', 0.5):.2f}), "
            f"{a_rate:,.0f}/s at {IN_FLIGHT}",
            med(lambda r: _pct(r["grant"], 0.99) / _pct(r["audited"], 0.99)),
            "(reference: the least audit-before-reply costs)",
        ),
        row(
            "vault grant p50, sequential, against a NATS request/reply echo",
            f"{p('grant', 0.5):.2f} ms",
            f"{p('echo', 0.5):.2f} ms (echo)",
            med(lambda r: _pct(r["grant"], 0.5) / _pct(r["echo"], 0.5)),
            "(reference)",
        ),
        row(
            f"vault grants per second, {IN_FLIGHT} in flight, one vault",
            f"{rate1:,.0f} grants/s",
            f"{floor_rate:,.0f} fsync'd publishes/s ({IN_FLIGHT} in flight)",
            med(lambda r: r["rate1"] / r["floor_rate"]),
            ">= 0.7x",
        ),
        row(
            f"vault grants per second, {IN_FLIGHT} in flight, two vaults",
            f"{rate2:,.0f} grants/s",
            f"{rate1:,.0f} grants/s (one vault)",
            med(lambda r: r["rate2"] / r["rate1"]),
            ">= 1.7x",
        ),
        row(
            f"vault CPU per grant, {IN_FLIGHT} in flight (grants per core-second)",
            f"{cpu * 1000:.3f} ms ({1 / cpu:,.0f}/s per core)",
            f"{1000 / echo_rate:.3f} ms of wall time per echo ({echo_rate:,.0f}/s)",
            med(lambda r: r["cpu"] * r["echo_rate"]),
            "(reference)",
        ),
    ]
