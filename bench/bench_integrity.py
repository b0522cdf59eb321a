"""SHA-256 + CRC-32 in one pass (shared.integrity.Digest) against SHA-256 alone, same bytes."""

from __future__ import annotations

import hashlib
import os
import time


def _cpu(fn: object, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()  # type: ignore[operator]
        best = min(best, time.process_time() - t0)
    return best


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

    base, mine = _cpu(sha_only), _cpu(ours)
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
