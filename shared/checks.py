"""Readiness checks more than one service uses, for ``ctx.health.add_check`` (``shared.health``).

Each returns a check: an async function giving ``None`` when fine, else one sentence of what is
wrong. They stay small: ``shared.health`` already times each one out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from aiohttp import web

Check = Callable[[], Awaitable[str | None]]


def database(pool: asyncpg.Pool) -> Check:
    """PostgreSQL answers ``SELECT 1`` on one of the pool's connections."""

    async def check() -> str | None:
        try:
            await pool.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            return f"PostgreSQL did not answer SELECT 1 ({type(exc).__name__})"
        return None

    return check


def listening(runner: web.BaseRunner, what: str) -> Check:
    """The aiohttp ``runner`` has a socket open (its site started and not stopped)."""

    async def check() -> str | None:
        return None if runner.addresses else f"the {what} port is not listening"

    return check


def tasks_running(tasks: Mapping[str, asyncio.Task[Any]]) -> Check:
    """Every task of ``tasks`` (by name) is still running: they are meant to run forever."""

    async def check() -> str | None:
        stopped = [name for name, task in tasks.items() if task.done()]
        if not stopped:
            return None
        first = tasks[stopped[0]]
        why = ""
        if not first.cancelled() and first.exception() is not None:
            why = f" ({type(first.exception()).__name__})"
        return f"{', '.join(sorted(stopped))} stopped{why}"

    return check
