"""SHA-256 + CRC-32 in one pass (shared.integrity.Digest) against SHA-256 alone, same bytes."""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Callable


def _cpu_pair(
    base: Callable[[], None], ours: Callable[[], None], rounds: int = 7
) -> tuple[float, float]:
    """Median CPU time of each after a warm-up, interleaved so that machine state (frequency,
    the other core's load) hits both alike."""
    base()
    ours()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for i, fn in enumerate((base, ours)):
            t0 = time.process_time()
            fn()
            times[i].append(time.process_time() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def run() -> list[dict[str, object]]:
    from shared.integrity import Digest

    data = os.urandom(1 << 20)
    chunks = 256  # 256 MiB in 1 MiB chunks

    def sha_only() -> None:
        h = hashlib.sha256()
        for _ in range(chunks):
            h.update(data)
        h.hexdigest()

    def ours() -> None:
        d = Digest()
        for _ in range(chunks):
            d.update(data)
        _ = (d.sha256, d.crc32)

    base, mine = _cpu_pair(sha_only, ours)
    gib = chunks / 1024
    return [
        {
            "name": "SHA-256 + CRC-32 digest, CPU s per GiB",
            "ours": f"{mine / gib:.3f} s",
            "baseline": f"{base / gib:.3f} s (SHA-256 alone)",
            "ratio": mine / base,
            "goal": "<= 1.1x",
        }
    ]
