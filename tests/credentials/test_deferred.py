"""Work deferred until a request's reply is sent stays with its own request."""

from __future__ import annotations

import asyncio

from services.credentials.deferred import after_reply, collect


def test_outside_a_request_the_work_runs_at_once() -> None:
    done: list[str] = []
    after_reply(lambda: done.append("now"))
    assert done == ["now"]


async def test_each_request_collects_only_its_own_work() -> None:
    async def request(name: str) -> list[str]:
        pending = collect()
        after_reply(lambda: None)
        await asyncio.sleep(0.01)  # interleave with the other request
        after_reply(lambda: None)
        return [name] * len(pending)

    first, second = await asyncio.gather(
        asyncio.create_task(request("a")), asyncio.create_task(request("b"))
    )
    assert first == ["a", "a"] and second == ["b", "b"]
