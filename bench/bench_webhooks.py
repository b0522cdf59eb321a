"""Webhook deliveries through the notifier against a plain aiohttp client loop (issue 15).

Real parts (not timed): an embedded nats-server (``sync_interval: always``) and PostgreSQL, the
vault and the notifier as processes (the tests' launchers; the notifier with
``webhook_concurrency`` = ``webhook_endpoint_concurrency`` = ``IN_FLIGHT``), one webhook endpoint
made as the API makes it, and a receiver: an aiohttp server in its own process on 127.0.0.1 that
answers 204 and counts (it does not verify signatures, so both sides cost it the same; the first
deliveries of each side are checked once with ``standardwebhooks``).

Each of ``ROUNDS`` rounds (medians reported; ratios are medians of per-round ratios):

1. Notifier: the receiver holds every request (a gate); ``N`` ``recording.started`` events (``N``
   recordings) are published, the notifier fans them out to ``N`` queued deliveries and starts
   sending (``IN_FLIGHT`` requests wait at the gate). Once the fan-out is drained the gate opens:
   timed from the gate opening to the ``N``-th request received. CPU (psutil, user + system) of
   the notifier, the vault (+ PostgreSQL) and nats-server from the gate opening until the
   delivery consumer has nothing pending.
2. Baseline: the same ``N`` bodies and ``webhook-id``s (read back from the round's
   ``webhook.queued`` events), signed with ``services.notifier.signing.sign`` and posted by
   ``IN_FLIGHT`` workers on one warm ``aiohttp.ClientSession``: timed from the loop's start to the
   ``N``-th request received; CPU of this process over the loop.
3. Where the time goes: each step a delivery takes, run alone from this process with
   ``IN_FLIGHT`` at once on the same servers: reading the pair's log (``natsio.read_subject``),
   the vault's endpoint lookup (``Endpoints.get``: one RPC, one PostgreSQL query), an fsync'd
   event publish (``natsio.publish``; two per delivery). The ack (``ack_sync``) is not measured.
4. End to end: with the gate open, ``N`` new source events published at ``IN_FLIGHT`` at once;
   timed from the first publish to the ``N``-th request received (fan-out included). The
   fan-out's own rate comes from phase 1 (first publish to its consumer drained, the deliveries
   held at the gate meanwhile).

A stream takes at most 1,000 consumers. ``read_subject`` (the notifier's, one per delivery)
used to leave its ephemeral consumer behind for 30 s, which capped a sustained flow at ~35/s;
it now deletes it. Between phases (not timed) the bench still deletes any left over, counts
them (the "left per delivery" figure, 0 since the fix), and once sends a burst of ``BURST``
deliveries (default 1,200: past that limit) to show that nothing caps it any more.

``RESGUARDO_BENCH_WEBHOOKS_N`` / ``_ROUNDS`` / ``_IN_FLIGHT`` / ``_BURST`` override the sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("RESGUARDO_BENCH_WEBHOOKS_N", "600"))
ROUNDS = int(os.environ.get("RESGUARDO_BENCH_WEBHOOKS_ROUNDS", "5"))
IN_FLIGHT = int(os.environ.get("RESGUARDO_BENCH_WEBHOOKS_IN_FLIGHT", "32"))
WARMUP = 50
# One burst beyond the 1,000 consumers a stream takes (0: skip it).
BURST = int(os.environ.get("RESGUARDO_BENCH_WEBHOOKS_BURST", "1200"))
STEP_CALLS = 400  # per step and round, for the breakdown
GOAL = 0.8
DEST = "dst_0123456789abcdef"

# The receiver: counts requests and keeps the first ``keep`` (headers, body) for a sanity check;
# while its gate is closed, requests wait (read, not yet answered).
RECEIVER = r"""
import asyncio, sys, time
from aiohttp import web

state = {"count": 0, "first": 0.0, "last": 0.0, "held": 0, "opened": 0.0, "keep": 0}
samples = []
gate = asyncio.Event()
gate.set()

async def hook(request):
    body = await request.read()
    if not gate.is_set():
        state["held"] += 1
        await gate.wait()
    now = time.monotonic()
    state["count"] += 1
    if state["count"] == 1:
        state["first"] = now
    state["last"] = now
    if len(samples) < state["keep"]:
        samples.append({"headers": dict(request.headers), "body": body.decode()})
    return web.Response(status=204)

async def control(request):
    ask = await request.json()
    if ask.get("reset"):
        state.update(count=0, first=0.0, last=0.0, held=0, keep=int(ask.get("keep", 0)))
        samples.clear()
    if ask.get("gate") == "closed":
        gate.clear()
    elif ask.get("gate") == "open":
        state["opened"] = time.monotonic()
        gate.set()
    return web.json_response(dict(state, samples=samples if ask.get("samples") else []))

async def main():
    app = web.Application()
    app.router.add_post("/hooks", hook)
    app.router.add_post("/control", control)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _cpu(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` so far (and of its children, for PostgreSQL)."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *(proc.children(recursive=True) if children else [])]
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


async def _in_flight(call: Callable[[int], Awaitable[None]], n: int) -> float:
    """Calls per second with ``IN_FLIGHT`` at once."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return n / (time.perf_counter() - t0)


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def _start_receiver(port: int) -> subprocess.Popen[bytes]:
    from shared.embedded import python_env

    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=python_env(),
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        proc.wait()
        raise RuntimeError("the receiver did not start")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run() -> list[dict[str, object]]:
    sys.path.insert(0, str(ROOT))
    from shared import natsio
    from shared.embedded import NatsServer, Postgres, free_port
    from tests.credentials.helpers import start_ready_vault, wait_ready

    with (
        tempfile.TemporaryDirectory(prefix="bench-webhooks-", dir="/tmp") as tmp_name,
        contextlib.ExitStack() as stack,  # every process stopped, whichever step failed
    ):
        tmp = Path(tmp_name)
        nats_log = stack.enter_context((tmp / "nats-server.log").open("wb"))
        server = NatsServer(tmp / "nats", log=nats_log).start()
        stack.callback(server.stop)
        pg_log = stack.enter_context((tmp / "postgres.log").open("wb"))
        pg = Postgres(tmp / "pg", log=pg_log).start()
        stack.callback(pg.stop)
        nc = await natsio.connect(server.url, name="bench-webhooks")
        try:
            js = nc.jetstream()
            await natsio.ensure_streams(js)
            vault = await asyncio.to_thread(start_ready_vault, tmp, server.url, pg.url)
            stack.callback(vault.stop)
            vault_key = await wait_ready(nc, vault)
            port = free_port()
            receiver = _start_receiver(port)
            stack.callback(_stop, receiver)
            bench = _Bench(js, nc, vault_key, f"http://127.0.0.1:{port}")
            try:
                rounds = await _with_notifier(bench, stack, tmp, server, vault, pg)
            finally:
                await bench.session.close()
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
    return _rows(rounds)


async def _with_notifier(
    bench: _Bench, stack: contextlib.ExitStack, tmp: Path, server: Any, vault: Any, pg: Any
) -> list[dict[str, float]]:
    from tests.notifier.support import start_notifier

    await bench.create_endpoint()
    notifier = start_notifier(
        tmp,
        server.url,
        webhook_concurrency=str(IN_FLIGHT),
        webhook_endpoint_concurrency=str(IN_FLIGHT),
        # Requests wait at the receiver's gate while the fan-out runs: no timeout then.
        webhook_timeout_s="120",
        webhook_ack_wait_s="30",
        # One secret lease for the whole run (the default, 60 s, adds one vault job a minute:
        # noise here).
        webhook_secret_ttl_s="3600",
    )
    stack.callback(notifier.stop)
    assert notifier.proc is not None and vault.proc is not None
    assert server.proc is not None and pg.proc is not None
    bench.notifier_log = notifier.log_path
    bench.pids = {
        "notifier": notifier.proc.pid,
        "vault": vault.proc.pid,
        "postgres": pg.proc.pid,
        "nats": server.proc.pid,
    }
    try:
        return await bench.measure()
    except BaseException:
        print(notifier.log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise


class _Bench:
    def __init__(self, js: Any, nc: Any, vault_key: bytes, base_url: str) -> None:
        import aiohttp

        from shared.ids import new_tenant_id

        self.js, self.nc, self.vault_key = js, nc, vault_key
        self.url = base_url + "/hooks"
        self.control_url = base_url + "/control"
        self.tenant = new_tenant_id()
        self.pids: dict[str, int] = {}
        self.notifier_log: Path | None = None
        self.session = aiohttp.ClientSession()  # the baseline's and the control requests'
        self.endpoint: Any = None
        self.secret: Any = None

    async def create_endpoint(self) -> None:
        from services.notifier.signing import WebhookSecret
        from tests.notifier.support import create_endpoint

        self.endpoint, secret = await create_endpoint(
            self.nc, self.vault_key, self.tenant, self.url
        )
        self.secret_text = secret
        self.secret = WebhookSecret.parse(secret)

    async def control(self, **ask: object) -> dict[str, Any]:
        async with self.session.post(self.control_url, json=ask) as response:
            reply: dict[str, Any] = await response.json()
            return reply

    async def publish_sources(self, n: int) -> list[str]:
        from shared.ids import new_recording_id
        from tests.credentials.helpers import publish_started

        rids = [new_recording_id() for _ in range(n)]

        async def one(i: int) -> None:
            await publish_started(self.js, rids[i], self.tenant, DEST)

        await _in_flight(one, n)
        return rids

    async def _drained(self, stream: str, durable: str) -> bool:
        info = await self.js.consumer_info(stream, durable)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    async def fanout_drained(self) -> bool:
        return await self._drained("RECORDINGS", "notifier-recordings")

    async def deliveries_drained(self) -> bool:
        from services.notifier.deliver import CONSUMER_NAME

        return await self._drained("WEBHOOKS", CONSUMER_NAME)

    async def received(self, n: int) -> bool:
        return int((await self.control())["count"]) >= n

    def cpu(self) -> dict[str, float]:
        return {name: _cpu(pid, children=name == "postgres") for name, pid in self.pids.items()}

    def check_signatures(self, samples: list[dict[str, Any]], who: str) -> None:
        """The Standard Webhooks reference library accepts what was sent (not our code)."""
        from standardwebhooks.webhooks import Webhook

        if not samples:
            raise RuntimeError(f"no {who} request kept for the signature check")
        for s in samples:
            Webhook(self.secret_text).verify(s["body"], s["headers"])

    async def warm_up(self) -> None:
        await self.control(reset=True, keep=5, gate="open")
        await self.publish_sources(WARMUP)
        await _until(lambda: self.received(WARMUP), 90, f"{WARMUP} warm-up deliveries")
        await _until(self.deliveries_drained, 30, "the warm-up deliveries to be acked")
        self.check_signatures((await self.control(samples=True))["samples"], "notifier")
        # The baseline's session, warm too (its connections open): the warm-up's bodies again.
        await self.control(reset=True)
        await self.post_all(await self.queued_since(1))
        await self.control(reset=True)

    async def consumers_left(self) -> int:
        info = await self.js.stream_info("WEBHOOKS")
        return int(info.state.consumer_count)

    async def clear_consumers(self) -> None:
        """Delete the WEBHOOKS stream's ephemeral consumers (not timed; all idle by now): every
        ``read_subject`` leaves one for its 30 s inactivity threshold, and the server refuses a
        stream's 1001st consumer, which the next phase would otherwise run into."""
        from services.notifier.deliver import CONSUMER_NAME

        names: list[str] = []
        while True:
            page = await self.js.consumers_info("WEBHOOKS", offset=len(names))
            if not page:
                break
            names += [c.name for c in page]
        gone = [n for n in names if n != CONSUMER_NAME]
        it = iter(gone)

        async def worker() -> None:
            for name in it:
                with contextlib.suppress(Exception):  # expired meanwhile
                    await self.js.delete_consumer("WEBHOOKS", name)

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    async def last_seq(self) -> int:
        info = await self.js.stream_info("WEBHOOKS")
        return int(info.state.last_seq)

    async def queued_since(self, seq: int) -> list[Any]:
        from shared import natsio
        from shared.events import webhooks as wh

        got = await natsio.read_subject(self.js, wh.STREAM, "webhooks.*.queued.*", start_seq=seq)
        return [e for _, e in got if isinstance(e, wh.DeliveryQueued)]

    async def post_all(self, queued: Sequence[Any]) -> None:
        """The baseline: sign each body and post it, ``IN_FLIGHT`` at once, one session."""
        from services.notifier.signing import sign

        it = iter(queued)

        async def worker() -> None:
            for q in it:
                data = q.body.encode()
                headers = sign(self.secret, q.webhook_id, int(time.time()), data)
                headers["content-type"] = "application/json"
                async with self.session.post(self.url, data=data, headers=headers) as response:
                    await response.read()
                    if response.status != 204:
                        raise RuntimeError(f"the receiver answered {response.status}")

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    def crashes(self) -> int:
        """The notifier's "handler crashed" log lines so far."""
        assert self.notifier_log is not None
        return self.notifier_log.read_text(errors="replace").count('"handler crashed"')

    async def gated(self, n: int, timeout: float) -> tuple[dict[str, float], dict[str, float]]:
        """``n`` deliveries queued behind the receiver's gate, then let through: their rate
        (gate opening to the n-th request), the fan-out's (first publish to drained) and the CPU
        used by each process from the gate opening until every delivery is acked."""
        await self.control(reset=True, gate="closed")
        t0 = time.monotonic()
        await self.publish_sources(n)
        await _until(self.fanout_drained, timeout, "the fan-out")
        fanout_rate = n / (time.monotonic() - t0)
        held = min(IN_FLIGHT, n)
        await _until(
            lambda: self._held(held), 60, f"{held} deliveries waiting at the receiver's gate"
        )
        cpu0 = self.cpu()
        opened = float((await self.control(gate="open"))["opened"])
        await _until(lambda: self.received(n), timeout, f"{n} deliveries")
        await _until(self.deliveries_drained, 60, "the deliveries to be acked")
        cpu1 = self.cpu()
        stats = await self.control()
        if stats["count"] != n:
            raise RuntimeError(f"{stats['count']} requests for {n} deliveries")
        rates = {"rate": n / (stats["last"] - opened), "fanout_rate": fanout_rate}
        return rates, {name: (cpu1[name] - cpu0[name]) / n for name in cpu0}

    async def notifier_round(self) -> tuple[dict[str, float], list[Any]]:
        seq0 = await self.last_seq()
        crashed = self.crashes()
        res, cpu = await self.gated(N, 120)
        if self.crashes() != crashed:
            raise RuntimeError("the notifier's handler crashed during a round; see its log")
        res |= {f"cpu_{name}": v for name, v in cpu.items()}
        queued = await self.queued_since(seq0 + 1)
        if len(queued) != N:
            raise RuntimeError(f"{len(queued)} queued deliveries for {N} source events")
        return res, queued

    async def _held(self, n: int) -> bool:
        return int((await self.control())["held"]) >= n

    async def baseline_round(self, queued: list[Any], check: bool) -> dict[str, float]:
        await self.control(reset=True, keep=5 if check else 0, gate="open")
        me = os.getpid()
        cpu0 = _cpu(me)
        t0 = time.monotonic()
        await self.post_all(queued)
        cpu1 = _cpu(me)
        stats = await self.control(samples=check)
        if stats["count"] != len(queued):
            raise RuntimeError(f"{stats['count']} requests for {len(queued)} posts")
        if check:
            self.check_signatures(stats["samples"], "baseline")
        return {
            "base_rate": len(queued) / (stats["last"] - t0),
            "base_cpu": (cpu1 - cpu0) / len(queued),
        }

    async def steps_round(self, queued: list[Any]) -> dict[str, float]:
        from datetime import UTC, datetime

        from services.notifier.endpoints import Endpoints
        from shared import natsio
        from shared.events import event_id
        from shared.events import webhooks as wh
        from shared.ids import new_recording_id

        endpoints = Endpoints(self.nc)
        token = wh.endpoint_token(self.endpoint.endpoint_id)

        async def read_log(i: int) -> None:
            q = queued[i % len(queued)]
            await natsio.read_subject(self.js, wh.STREAM, f"webhooks.{q.recording_id}.*.{token}")

        async def vault_get(i: int) -> None:
            if await endpoints.get(self.tenant, self.endpoint.endpoint_id) is None:
                raise RuntimeError("the vault does not know the endpoint")

        rid = new_recording_id()  # a recording no delivery is queued for

        async def publish(i: int) -> None:
            q = queued[i % len(queued)]
            await natsio.publish(
                self.js,
                wh.DeliveryAttempted(
                    event_id=event_id("bench", rid, str(time.time_ns()), i),
                    recording_id=rid,
                    tenant_id=self.tenant,
                    occurred_at=datetime.now(UTC),
                    endpoint_id=self.endpoint.endpoint_id,
                    delivery_id=q.event_id,
                    webhook_id=q.webhook_id,
                    attempt=1,
                    status=204,
                    latency_ms=1.0,
                ),
            )

        return {
            "read_rate": await _in_flight(read_log, STEP_CALLS),
            "vault_rate": await _in_flight(vault_get, STEP_CALLS),
            "publish_rate": await _in_flight(publish, STEP_CALLS),
        }

    async def end_to_end_round(self) -> dict[str, float]:
        await self.control(reset=True, gate="open")
        t0 = time.monotonic()
        await self.publish_sources(N)
        await _until(lambda: self.received(N), 120, f"{N} deliveries (end to end)")
        stats = await self.control()
        await _until(self.deliveries_drained, 60, "the deliveries to be acked")
        return {"e2e_rate": N / (stats["last"] - t0)}

    async def measure(self) -> list[dict[str, float]]:
        await self.warm_up()
        await self.clear_consumers()
        rounds = []
        for r in range(ROUNDS):
            t0 = time.monotonic()
            res, queued = await self.notifier_round()
            res["left"] = (await self.consumers_left() - 1) / N  # less the durable
            await self.clear_consumers()
            res |= await self.baseline_round(queued, check=r == 0)
            res |= await self.steps_round(queued)
            await self.clear_consumers()
            res |= await self.end_to_end_round()
            await self.clear_consumers()
            rounds.append(res)
            print(
                f"  round {r + 1}/{ROUNDS} ({time.monotonic() - t0:.0f} s): notifier "
                f"{res['rate']:,.0f}/s, loop {res['base_rate']:,.0f}/s, end to end "
                f"{res['e2e_rate']:,.0f}/s; notifier CPU {res['cpu_notifier'] * 1000:.2f} "
                "ms/delivery",
                file=sys.stderr,
                flush=True,
            )
        if BURST:
            print(f"  a burst of {BURST}...", file=sys.stderr, flush=True)
            crashed = self.crashes()
            burst, _ = await self.gated(BURST, 170)
            rounds[0]["burst_rate"] = burst["rate"]
            rounds[0]["burst_crashes"] = self.crashes() - crashed
            print(
                f"  burst: {burst['rate']:,.0f}/s, {rounds[0]['burst_crashes']:.0f} "
                '"handler crashed" lines in the notifier\'s log',
                file=sys.stderr,
                flush=True,
            )
            assert self.notifier_log is not None
            lines = self.notifier_log.read_text(errors="replace").splitlines()
            first = next((ln for ln in lines if '"handler crashed"' in ln), "")
            if first:
                print(f"  first of them ends: ...{first[-240:]}", file=sys.stderr)
        return rounds


def _rows(rounds: list[dict[str, float]]) -> list[dict[str, object]]:
    def med(f: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(f(r) for r in rounds)

    def row(name: str, ours: str, baseline: str, ratio: float, goal: str) -> dict[str, object]:
        return {"name": name, "ours": ours, "baseline": baseline, "ratio": ratio, "goal": goal}

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f} ms"

    rate, base = med(lambda r: r["rate"]), med(lambda r: r["base_rate"])
    ratio = med(lambda r: r["rate"] / r["base_rate"])

    def of(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    # Seconds per call at IN_FLIGHT at once, each step run alone.
    per = {
        k: statistics.median(1 / r[k] for r in rounds)
        for k in ("read_rate", "vault_rate", "publish_rate")
    }
    post = 1 / base
    model = per["read_rate"] + per["vault_rate"] + 2 * per["publish_rate"] + post
    cpu = {k: of(f"cpu_{k}") for k in ("notifier", "vault", "postgres", "nats")}
    base_cpu = med(lambda r: r["base_cpu"])
    e2e = med(lambda r: r["e2e_rate"])
    fanout = med(lambda r: r["fanout_rate"])
    left = med(lambda r: r["left"])
    burst_rows = []
    if "burst_rate" in rounds[0]:
        burst = rounds[0]["burst_rate"]
        burst_rows.append(
            row(
                f"webhook deliveries/s, one burst of {BURST} (beyond the 1,000 consumers a "
                "stream takes: a log read that left its consumer behind would stall here)",
                f'{burst:,.0f}/s ({rounds[0]["burst_crashes"]:.0f} "handler crashed" lines; '
                f"{left:.2f} consumers left per delivery after a round)",
                f"{rate:,.0f}/s (rounds of {N})",
                burst / rate,
                "(reference: ~1.0x when nothing caps it)",
            )
        )
    shape = f"medians of {len(rounds)} rounds of {N}, {IN_FLIGHT} in flight, one endpoint"
    return [
        row(
            f"webhook deliveries/s, notifier vs a plain aiohttp loop ({shape}; from the "
            "receiver's gate opening / the loop's start to the N-th request received)",
            f"{rate:,.0f}/s",
            f"{base:,.0f}/s (aiohttp.ClientSession, same bodies and webhook-ids, signed with "
            "signing.sign)",
            ratio,
            f">= {GOAL:.2f}x: {'met' if ratio >= GOAL else 'missed'}",
        ),
        row(
            "webhook notifier CPU per delivery (psutil user+system over the timed run), vs the "
            "plain loop's CPU per request",
            f"{ms(cpu['notifier'])} (+ vault {ms(cpu['vault'])}, PostgreSQL "
            f"{ms(cpu['postgres'])}, nats-server {ms(cpu['nats'])})",
            f"{ms(base_cpu)} (the loop's process)",
            med(lambda r: r["cpu_notifier"] / r["base_cpu"]),
            "(reference)",
        ),
        row(
            "webhook deliveries/s against the sum of a delivery's steps, each run alone "
            f"({IN_FLIGHT} in flight, same servers; the ack not counted)",
            f"{rate:,.0f}/s ({1000 / rate:.2f} ms each)",
            f"{1 / model:,.0f}/s = 1 / (read the pair's log {ms(per['read_rate'])} + vault "
            f"endpoint lookup {ms(per['vault_rate'])} + 2 x fsync'd publish "
            f"{ms(per['publish_rate'])} + POST {ms(post)})",
            med(
                lambda r: (
                    r["rate"]
                    * (
                        1 / r["read_rate"]
                        + 1 / r["vault_rate"]
                        + 2 / r["publish_rate"]
                        + 1 / r["base_rate"]
                    )
                )
            ),
            "(reference: where the time goes)",
        ),
        row(
            f"webhook deliveries/s against fsync'd JetStream publishes/s ({IN_FLIGHT} in flight, "
            "same server; a delivery makes two and an ack)",
            f"{rate:,.0f}/s",
            f"{1 / per['publish_rate']:,.0f} publishes/s",
            med(lambda r: r["rate"] / r["publish_rate"]),
            "(reference)",
        ),
        row(
            "webhook deliveries/s end to end (N source events published with the notifier "
            "running; from the first publish to the N-th request received: fan-out included)",
            f"{e2e:,.0f}/s (the fan-out alone: {fanout:,.0f} source events/s, one at a time)",
            f"{rate:,.0f}/s (deliveries alone, above)",
            med(lambda r: r["e2e_rate"] / r["rate"]),
            "(reference)",
        ),
        *burst_rows,
    ]
