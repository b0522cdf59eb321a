"""Run a packet source ahead in its own thread. PyAV decodes and encodes without holding the GIL,
so one stream's encoder (AAC, say) works while another's (x264) is waited on: what the ffmpeg CLI
gets from its encoder threads. The items come out in the source's own order, so the muxed file
is byte for byte the same; memory stays bounded by the queue."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")

BATCH = 16  # items per hand-over: one queue operation per batch, not per packet
DEPTH = 4  # batches waiting at most


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def _produce(source: Iterator[T], out: queue.Queue[list[T] | _End], stop: threading.Event) -> None:
    error: BaseException | None = None
    batch: list[T] = []
    try:
        for item in source:
            batch.append(item)
            if len(batch) >= BATCH:
                out.put(batch)
                batch = []
                if stop.is_set():
                    return
    except BaseException as exc:  # re-raised in the consumer's thread
        error = exc
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # the source's files are closed in the thread that read them
    if batch:
        out.put(batch)  # what came before an error is still delivered, as without a thread
    out.put(_End(error))


def prefetched(source: Iterator[T]) -> Generator[T, None, None]:
    """``source``'s items, produced in a thread of their own; its exception is raised here.
    Closing this generator stops the thread and waits for it."""
    handover: queue.Queue[list[T] | _End] = queue.Queue(DEPTH)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(source, handover, stop), daemon=True)
    thread.start()
    try:
        while not isinstance(got := handover.get(), _End):
            yield from got
        if got.error is not None:
            raise got.error
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                handover.get(timeout=0.05)
        thread.join()
