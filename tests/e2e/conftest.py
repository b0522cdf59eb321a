from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .system import RunningSystem, start_system, stop_system


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    """`resguardo up` in a temp data dir on free ports, stopped (every process) afterwards."""
    running = start_system(tmp_path)
    try:
        yield running
    finally:
        stop_system(running)
