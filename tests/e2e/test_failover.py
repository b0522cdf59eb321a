"""A JetStream cluster of three (`resguardo up --cluster 3`, R3 streams): during a recording,
kill -9 the node that leads CAPTURES, then the meta leader. No event is lost or duplicated (by
event id), every node ends with the same stream state, and the recording is uploaded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest

from resguardo.publisher import publish
from shared.events import STREAMS

from ..servers import wait_until
from .system import RunningSystem, start_system, stop_system, stream_events

pytestmark = pytest.mark.slow

SECONDS = 8.0


def jsz(node: dict[str, Any], query: str = "") -> dict[str, Any]:
    with urllib.request.urlopen(f"{node['monitor_url']}/jsz{query}", timeout=5) as r:
        return dict(json.loads(r.read()))


def nodes(system: RunningSystem) -> list[dict[str, Any]]:
    status = json.loads((system.data_dir / "run" / "status.json").read_text())
    return list(status["nats"]["nodes"])


def stream_states(node: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(messages, last sequence) of every event stream (all R3), as this node stores it."""
    ours = {spec.name for spec in STREAMS}
    out = {}
    for account in jsz(node, "?streams=true").get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"] in ours:
                out[stream["name"]] = (stream["state"]["messages"], stream["state"]["last_seq"])
    return out


def kill_node(system: RunningSystem, name: str) -> None:
    node = next(n for n in nodes(system) if n["name"] == name)
    os.kill(node["pid"], signal.SIGKILL)


async def leader_of(nats_url: str, stream: str) -> str:
    nc = await nats.connect(nats_url.split(","))
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nc.close()


async def meta_leader(system: RunningSystem, timeout: float = 30.0) -> str:
    """The meta leader as any live node reports it. Right after a node dies the meta group may be
    electing (no `leader` key yet) or the asked node may be the dead one, so ask again."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for node in nodes(system):
            try:
                leader = jsz(node).get("meta_cluster", {}).get("leader")
            except OSError:
                continue
            if leader:
                return str(leader)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no meta leader reported within {timeout} s")
        await asyncio.sleep(0.2)


async def event_ids(nats_url: str, rid: str) -> Counter[str]:
    """How many times each event id of the recording is stored, over every stream."""
    nc = await nats.connect(nats_url.split(","))
    js = nc.jetstream()
    seen: Counter[str] = Counter()
    try:
        for spec in STREAMS:
            if spec.name == "DEADLETTER":
                continue
            sub = await js.subscribe(f"{spec.prefix}.{rid}.>", ordered_consumer=True)
            try:
                while True:
                    try:
                        msg = await sub.next_msg(timeout=1.0)
                    except (TimeoutError, nats.errors.TimeoutError):
                        break
                    seen[json.loads(msg.data)["event_id"]] += 1
            finally:
                await sub.unsubscribe()
    finally:
        await nc.close()
    return seen


async def call(
    system: RunningSystem, rec: dict[str, Any], kill_at: list[tuple[float, str]]
) -> None:
    ca = Path(system.endpoints["ca_file"])
    calls = [
        asyncio.create_task(
            publish(rec["whip_url"], rec["token"], participant=p, seconds=SECONDS, ca_file=ca)
        )
        for p in ("ana", "ben")
    ]
    url = system.endpoints["nats_url"]
    try:
        for at, what in kill_at:
            await asyncio.sleep(at)
            if what == "captures-leader":
                kill_node(system, await leader_of(url, "CAPTURES"))
            else:
                kill_node(system, await meta_leader(system))
        await asyncio.gather(*calls)
    finally:
        # A failed kill step must not leave the calls running past the test's timeout.
        for task in calls:
            task.cancel()
        await asyncio.wait(calls, timeout=15)


def test_killing_the_leaders_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    system = start_system(tmp_path, up_args=("--cluster", "3"))
    try:
        assert len(nodes(system)) == 3
        config = tmp_path / "local.json"
        config.write_text(json.dumps({"path": str(tmp_path / "delivered")}))
        system.cli("destinations", "add", "local", "--provider", "file", "--config", str(config))
        rec = system.cli_json("recordings", "start", "--destination", "local")
        rid = rec["recording_id"]
        asyncio.run(call(system, rec, [(2.0, "captures-leader"), (3.0, "meta-leader")]))
        system.cli("recordings", "stop", rid)
        # Both kills happened, and the supervisor restarted each node on its own store.
        assert system.log_path.read_text().count("nats-server exited; restarting") == 2
        final = system.wait_state(rid, {"uploaded"}, timeout=180)
        assert final["files"], final

        seen = asyncio.run(event_ids(system.endpoints["nats_url"], rid))
        assert seen and max(seen.values()) == 1, [e for e, n in seen.items() if n > 1]
        events = asyncio.run(stream_events(system.endpoints["nats_url"], rid))
        kinds = Counter(kind for _, kind in events)
        assert kinds["capture.closed"] == kinds["upload.uploaded"] == 1, kinds
        closed = system.cli_json("recordings", "show", rid)
        # Nothing lost: every segment the proxy wrote is counted by the capture and sealed.
        assert kinds["capture.segment_written"] >= 8, kinds
        assert closed["state"] == "uploaded"

        def same_everywhere() -> bool:
            states = [stream_states(n) for n in nodes(system)]
            return len(states[0]) == len(STREAMS) and all(st == states[0] for st in states)

        try:
            wait_until(same_everywhere, timeout=60, message="every node to hold the same streams")
        except AssertionError:
            raise AssertionError([stream_states(n) for n in nodes(system)]) from None
    finally:
        stop_system(system)
