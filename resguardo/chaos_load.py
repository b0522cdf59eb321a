"""The two halves of a chaos run that act on a running system: the calls and the killer.

- ``Api``: the HTTP API as a client that outlives a killed API instance: every request goes to
  one API instance after another until one answers, up to a deadline.
- ``run_calls``: recordings of two participants, published over time; a participant whose proxy
  dies (refused, never connected, or media cut) reconnects to the other proxy, as a real WHIP
  client would, so every recording has media from both unless every try failed.
- ``Killer``: kill -9 of a seeded random target every few seconds, then waits for it to be
  running again before the next: a service instance or a NATS node (restarted by the
  supervisor) or a SeaweedFS volume server (restarted here after a pause). One target is down
  at a time, so a NATS kill never takes the cluster below its quorum.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resguardo.chaos_seaweed import ReplicatedSeaweed
from resguardo.cli import CliError
from resguardo.client import ApiClient, Endpoint
from resguardo.publisher import Publisher
from shared.procs import read_pid

log = logging.getLogger("resguardo.chaos")

SERVICES = ("credentials", "api", "proxy", "transcoder", "uploader")
KINDS = (*SERVICES, "nats", "seaweed-volume")
PARTICIPANTS = ("ana", "ben")
RESTART_TIMEOUT_S = 90.0  # above the supervisor's longest backoff (30 s) plus a start


class Api:
    def __init__(self, urls: list[str], ca_file: Path, token: str) -> None:
        self.clients = [ApiClient(Endpoint(u, ca_file, token), timeout=15) for u in urls]
        self._next = 0

    def request(self, method: str, path: str, body: Any = None, deadline_s: float = 120) -> Any:
        deadline = time.monotonic() + deadline_s
        while True:
            client = self.clients[self._next % len(self.clients)]
            try:
                return client.request(method, path, body)
            except CliError as exc:
                self._next += 1  # the next try goes to the other instance
                if time.monotonic() > deadline:
                    raise
                log.debug("API request failed; retrying", extra={"error": str(exc)})
                time.sleep(0.5)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.request, method, path, body)


@dataclass
class CallStats:
    started: list[str] = field(default_factory=list)  # recording ids, in start order
    reconnects: int = 0  # publisher sessions that had to be tried again
    silent: list[str] = field(default_factory=list)  # "<rid>/<participant>" never connected
    start_errors: int = 0  # recordings the API never started (not counted as started)


async def participant(
    urls: list[str], token: str, name: str, seconds: float, ca: Path, stats: CallStats
) -> bool:
    """Publish ``seconds`` of connected media, over several sessions if a proxy dies: True if
    any session connected. The clock runs only while connected: on a loaded machine, setting
    up a session (ICE gathering, DTLS) can itself take longer than a short call."""
    loop = asyncio.get_running_loop()
    left = seconds
    connected = False
    for attempt in range(6):
        if attempt:
            stats.reconnects += 1
        url = urls[attempt % len(urls)]
        pub = Publisher(
            url, token, participant=name, ca_file=ca, width=320, height=180, connect_timeout=10
        )
        try:
            await pub.start()
        except Exception:  # refused, unreachable, ICE failed: the proxy is down or restarting
            await pub.stop(delete=False)
            await asyncio.sleep(0.5)
            continue
        connected = True
        since = loop.time()
        try:
            while loop.time() - since < left and pub.pc is not None:
                if pub.pc.connectionState != "connected":
                    break  # the proxy went away under us: reconnect elsewhere
                await asyncio.sleep(0.25)
        finally:
            left -= loop.time() - since
            await pub.stop()
        if left <= 0:
            return True
    return connected


async def one_call(
    api: Api, bases: list[str], ca: Path, index: int, seconds: float, stats: CallStats
) -> None:
    try:
        rec = await api.call(
            "POST", "/v1/recordings", {"destination": "archive", "label": f"chaos-{index}"}
        )
    except CliError:
        stats.start_errors += 1
        return
    rid = rec["recording_id"]
    stats.started.append(rid)
    others = [f"{b}/{rid}" for b in bases if f"{b}/{rid}" != rec["whip_url"]]
    # Even calls: both on the proxy the API chose; odd calls: one participant on each proxy.
    firsts = [rec["whip_url"], rec["whip_url"] if index % 2 == 0 else others[0]]
    every = [rec["whip_url"], *others]
    results = await asyncio.gather(
        *(
            participant(
                [first, *(u for u in every if u != first)], rec["token"], name, seconds, ca, stats
            )
            for first, name in zip(firsts, PARTICIPANTS, strict=True)
        )
    )
    stats.silent += [f"{rid}/{n}" for n, ok in zip(PARTICIPANTS, results, strict=True) if not ok]
    await api.call("POST", f"/v1/recordings/{rid}/stop")


async def run_calls(
    api: Api,
    bases: list[str],
    ca: Path,
    *,
    count: int,
    seconds: float,
    parallel: int,
    spacing: float,
    stats: CallStats,
) -> None:
    """``count`` calls, at most ``parallel`` at once, one started every ``spacing`` s at most."""
    gate = asyncio.Semaphore(parallel)
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def paced(i: int) -> None:
        await asyncio.sleep(max(0.0, t0 + i * spacing - loop.time()))
        async with gate:
            await one_call(api, bases, ca, i, seconds, stats)

    await asyncio.gather(*(paced(i) for i in range(count)))


@dataclass
class Kill:
    kind: str
    target: str
    at_s: float
    restarted_in_s: float | None  # None: not running again within RESTART_TIMEOUT_S


class Killer:
    def __init__(
        self, run_dir: Path, instances: int, weed: ReplicatedSeaweed, rng: random.Random
    ) -> None:
        self.run_dir = run_dir
        self.instances = instances
        self.weed = weed
        self.rng = rng
        self.kills: list[Kill] = []
        self._round: list[str] = []
        self._t0 = time.monotonic()

    def by_kind(self) -> dict[str, int]:
        counts = Counter(k.kind for k in self.kills)
        return {kind: counts.get(kind, 0) for kind in KINDS}

    def _next_kind(self) -> str:
        # Rounds of every kind in a seeded order: a short run still hits each kind once.
        if not self._round:
            self._round = list(KINDS)
            self.rng.shuffle(self._round)
        return self._round.pop()

    def _status(self) -> dict[str, Any]:
        return dict(json.loads((self.run_dir / "status.json").read_text()))

    def _service_pid(self, name: str) -> int | None:
        """The live pid of a service (its pid file's start time guards against a reused pid)."""
        proc = read_pid(self.run_dir / f"{name}.pid")
        return None if proc is None else proc.pid

    def _nats_node(self, name: str) -> dict[str, Any]:
        return dict(next(n for n in self._status()["nats"]["nodes"] if n["name"] == name))

    async def kill_one(self, pause: float) -> Kill:
        """On the event loop's thread, never a worker's: a child started with a parent-death
        signal gets it when the *thread* that started it exits (PR_SET_PDEATHSIG)."""
        kind = self._next_kind()
        t = time.monotonic()
        if kind == "seaweed-volume":
            index = self.rng.randrange(len(self.weed.volumes))
            target = f"volume-{index}"
            self.weed.kill_volume(index)
            await asyncio.sleep(pause)  # nothing restarts it but us: the outage lasts this long
            self.weed.restart_volume(index)
            back: float | None = time.monotonic() - t
        elif kind == "nats":
            nodes = self._status()["nats"]["nodes"]
            target = self.rng.choice(nodes)["name"]
            old = self._nats_node(target)["pid"]
            if old:
                os.kill(old, signal.SIGKILL)
            back = await self._wait(t, lambda: self._nats_back(target, old))
        else:
            target = f"{kind}-{self.rng.randrange(self.instances)}"
            old = self._service_pid(target)
            if old:
                os.kill(old, signal.SIGKILL)
            back = await self._wait(t, lambda: self._service_pid(target) not in (None, old))
        kill = Kill(kind, target, round(t - self._t0, 1), None if back is None else round(back, 1))
        self.kills.append(kill)
        log.info(
            "kill %d: %s, running again after %s s", len(self.kills), target, kill.restarted_in_s
        )
        return kill

    def _nats_back(self, name: str, old: int | None) -> bool:
        node = self._nats_node(name)
        if node["pid"] in (None, old):
            return False
        try:  # running and caught up with its peers (JetStream current), not only started
            url = f"{node['monitor_url']}/healthz"
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback http)
                return bool(json.loads(r.read()).get("status") == "ok")
        except (OSError, ValueError):
            return False

    async def _wait(self, t: float, back: Any) -> float | None:
        while time.monotonic() - t < RESTART_TIMEOUT_S:
            try:
                if await asyncio.to_thread(back):  # reads files and HTTP: off the loop
                    return time.monotonic() - t
            except (OSError, ValueError, StopIteration, KeyError):
                pass  # status.json being rewritten
            await asyncio.sleep(0.2)
        return None

    async def run(self, kills: int, interval: tuple[float, float], done: asyncio.Event) -> None:
        """``kills`` kills, a seeded ``interval`` apart; the last ones may follow the calls."""
        for _ in range(kills):
            await asyncio.sleep(self.rng.uniform(*interval))
            pause = self.rng.uniform(1.0, 4.0)
            await self.kill_one(pause)
        done.set()
