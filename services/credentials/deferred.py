"""Bookkeeping that may wait until a request's reply is on its way (a log line after a grant).

The service sets a list per request (each request runs in its own task, so a ContextVar keeps
them apart); code that runs inside the request adds to it; outside a request the work runs at
once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

_pending: ContextVar[list[Callable[[], None]] | None] = ContextVar("after_reply", default=None)


def after_reply(work: Callable[[], None]) -> None:
    pending = _pending.get()
    if pending is None:
        work()
    else:
        pending.append(work)


def collect() -> list[Callable[[], None]]:
    """Start collecting this task's deferred work; the list it returns fills as it runs."""
    pending: list[Callable[[], None]] = []
    _pending.set(pending)
    return pending
