"""Two API processes projecting the same streams into one database at the same time.

Each runs its own consumers, so every event reaches both; the offset row (locked with ``SELECT
... FOR UPDATE`` in the event's transaction) and the event row's primary key decide which one
folds it. The read model must come out exactly as one instance alone builds it (checked against a
third, single instance replaying into a fresh database), also after a kill -9 of one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from services.api.projector import PROJECTED
from shared.embedded import NatsServer, Postgres
from shared.events import Event

from . import factories as f
from .support import ApiProcess, db_fetch, dev_tenant_id, eventually, make_api, publish_all

RECORDINGS = 30
EVENTS_PER_RECORDING = 10  # what _life() publishes before the extra joins


def _life(dev: str, extra_joins: int = 0) -> tuple[str, list[Event]]:
    """One recording from start to upload, as the other services would publish it."""
    start = f.started(dev)
    rid = start.recording_id
    return rid, [
        start,
        f.joined(rid, dev, "alice", "s1"),
        f.joined(rid, dev, "bob", "s1"),
        f.left(rid, dev, "alice", "s1"),
        f.joined(rid, dev, "alice", "s2"),
        *(f.joined(rid, dev, "carol", f"s{i}") for i in range(extra_joins)),
        f.closed(rid, dev),
        f.sealed(rid, dev),
        f.attempt(rid, dev),
        f.file_uploaded(rid, dev),
        f.uploaded(rid, dev),
    ]


async def _publish_many(js: JetStreamContext, lives: list[tuple[str, list[Event]]]) -> None:
    """All recordings at once (each one's events in order), as fast as JetStream takes them."""
    await asyncio.gather(*(publish_all(js, events) for _, events in lives))


async def _last_seqs(js: JetStreamContext) -> dict[str, int]:
    return {s.name: (await js.stream_info(s.name)).state.last_seq for s in PROJECTED}


async def _caught_up(js: JetStreamContext, database_url: str) -> dict[str, int]:
    """Wait until every stream's stored offset reaches its last sequence; then they must be
    equal (an offset past the stream would be a bug too)."""
    last = {name: seq for name, seq in (await _last_seqs(js)).items() if seq}

    async def reached() -> dict[str, int] | None:
        rows = await db_fetch(database_url, "SELECT stream, last_seq FROM api.projection_offsets")
        stored = {r["stream"]: int(r["last_seq"]) for r in rows}
        return stored if all(stored.get(n, 0) >= seq for n, seq in last.items()) else None

    stored = await eventually(reached, timeout=90, message=f"offsets {last}")
    assert stored is not None
    assert {n: stored.get(n, 0) for n in last} == last
    return last


def _check_view(body: dict[str, Any], extra_joins: int) -> None:
    """Exactly what the events say, folded once each."""
    assert body["state"] == "uploaded", body
    sessions = {p["participant_id"]: p["sessions"] for p in body["participants"]}
    assert sessions == {"alice": 2, "bob": 1} | ({"carol": extra_joins} if extra_joins else {})
    assert not any(p["connected"] for p in body["participants"])
    assert [x["name"] for x in body["files"]] == ["alice.webm", "SHA256SUMS"]
    assert all(x["remote_uri"] for x in body["files"])
    assert body["events_total"] == EVENTS_PER_RECORDING + extra_joins


async def _bodies(api: ApiProcess, rids: list[str]) -> dict[str, Any]:
    out = {}
    for rid in rids:
        r = await api.request("GET", f"/v1/recordings/{rid}")
        assert r.status == 200, r.text
        out[rid] = r.body
    return out


async def _read_model(database_url: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    views = await db_fetch(
        database_url, "SELECT recording_id, view FROM api.recordings ORDER BY recording_id"
    )
    events = await db_fetch(
        database_url,
        "SELECT stream, seq, recording_id, type, summary FROM api.recording_events "
        "ORDER BY stream, seq",
    )
    return [(r["recording_id"], r["view"]) for r in views], [tuple(r) for r in events]


class OffsetWatch:
    """Samples the stored offsets while the instances run: none may ever move backwards (a
    lagging instance overwriting a newer offset with its older one)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.backwards: list[tuple[str, int, int]] = []
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        seen: dict[str, int] = {}
        try:
            while True:
                for r in await conn.fetch("SELECT stream, last_seq FROM api.projection_offsets"):
                    stream, seq = r["stream"], int(r["last_seq"])
                    if seq < seen.get(stream, 0):
                        self.backwards.append((stream, seen[stream], seq))
                    seen[stream] = max(seq, seen.get(stream, 0))
                self.samples += 1
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _assert_clean_log(api: ApiProcess) -> None:
    text = api.log_text()
    for bad in ('"level": "error"', '"level": "critical"', "Traceback", "deadlock"):
        assert bad not in text, f"{bad!r} in {api.log_path.name}:\n{text[-5000:]}"
    # A restart means a NATS or PostgreSQL error (a conflict, a lock timeout) hit a projector.
    assert "projection restarting" not in text, text[-5000:]


@pytest.fixture
async def replay_url(postgres_server: Postgres) -> AsyncIterator[str]:
    name = f"replay_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, _, query = postgres_server.url.partition("?")
    yield base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    admin = await asyncpg.connect(postgres_server.url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_two_instances_fold_each_event_once(
    tmp_path: Path,
    nats_server: NatsServer,
    js: JetStreamContext,
    database_url: str,
    replay_url: str,
) -> None:
    a = make_api(tmp_path, nats_server.url, database_url, name="api-a")
    b = make_api(tmp_path, nats_server.url, database_url, name="api-b")
    replay: ApiProcess | None = None
    watch = OffsetWatch(database_url)
    a.start()
    b.start()  # at once: schema and bootstrap are raced too
    try:
        await a.ready()
        await b.ready()
        dev = await dev_tenant_id(database_url)
        watch.start()

        # 1. Both live while 30 recordings' worth of events pour in.
        first = [_life(dev) for _ in range(RECORDINGS)]
        await _publish_many(js, first)
        await _caught_up(js, database_url)
        rids = [rid for rid, _ in first]
        seen_a, seen_b = await _bodies(a, rids), await _bodies(b, rids)
        assert seen_a == seen_b
        for body in seen_a.values():
            _check_view(body, 0)

        # 2. kill -9 one of them while both are projecting a second, larger burst.
        extra = 10
        second = [_life(dev, extra) for _ in range(RECORDINGS)]
        before = (await _last_seqs(js))["CAPTURES"]
        publishing = asyncio.ensure_future(_publish_many(js, second))

        async def part_way() -> bool:
            rows = await db_fetch(
                database_url,
                "SELECT last_seq FROM api.projection_offsets WHERE stream = 'CAPTURES'",
            )
            return int(rows[0]["last_seq"]) >= before + 20

        await eventually(part_way, message="the second burst to be part-way projected")
        b.kill()
        # Killed mid-burst, or the step proves nothing (then make the burst larger).
        assert not publishing.done()
        await publishing
        await _caught_up(js, database_url)
        rids += [rid for rid, _ in second]
        seen_a = await _bodies(a, rids)
        for rid, _ in first:
            _check_view(seen_a[rid], 0)
        for rid, _ in second:
            _check_view(seen_a[rid], extra)

        # The killed one comes back, skips what the other applied, and agrees.
        b.start()
        await b.ready()
        stored = await _caught_up(js, database_url)
        assert await _bodies(b, rids) == seen_a
        assert await _bodies(a, rids) == seen_a
        await watch.stop()
        assert watch.samples > 10 and not watch.backwards, watch.backwards

        # 3. One instance alone, replaying everything into an empty database (same data dir, so
        # the same dev tenant), builds the very same read model.
        replay = make_api(tmp_path, nats_server.url, replay_url, name="api-replay")
        shutil.copytree(a.data_dir, replay.data_dir)
        replay.start()
        await replay.ready()
        assert await _caught_up(js, replay_url) == stored
        assert await _read_model(replay_url) == await _read_model(database_url)
        assert await _bodies(replay, rids) == seen_a

        for done in (a, b, replay):
            _assert_clean_log(done)
    finally:
        await watch.stop()
        for proc in (a, b, replay):
            if proc is not None:
                proc.stop()
