"""Progress on long work, on stderr, so stdout stays clean for --json."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A one-line progress bar; redraws at most 10 times a second, and only on a terminal
    (in logs and CI it prints one line at the start and one at the end)."""

    def __init__(
        self, label: str, total: int, *, unit: str = "B", stream: TextIO = sys.stderr
    ) -> None:
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.stream = stream
        self.done = 0
        self._last = 0.0
        self._tty = stream.isatty()
        if not self._tty:
            print(f"{label}: {self._amount(total)}...", file=stream, flush=True)

    def _amount(self, n: int) -> str:
        if self.unit != "B":
            return f"{n} {self.unit}"
        size = float(n)
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if size < 1024 or suffix == "GiB":
                return f"{size:.0f} {suffix}" if suffix == "B" else f"{size:.1f} {suffix}"
            size /= 1024
        return f"{n} B"

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._tty and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac:6.1%} {self._amount(self.done)}")
            self.stream.flush()

    def finish(self, note: str = "done") -> None:
        if self._tty:
            self.stream.write("\n")
        print(f"{self.label}: {note}", file=self.stream, flush=True)
