"""Encoders in their own threads: the same packets in the same order, errors where the caller
can catch them, and no thread left behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.transcoder.errors import SegmentInvalid
from services.transcoder.plan import OutputOptions, plan_files
from services.transcoder.prefetch import BATCH, prefetched
from services.transcoder.remux import remux
from services.transcoder.state import fold

from .capture_factory import ParticipantSpec, SessionSpec, make_capture


def test_items_come_out_in_order_across_batches() -> None:
    n = BATCH * 5 + 3
    assert list(prefetched(iter(range(n)))) == list(range(n))


def test_the_sources_error_is_raised_in_the_callers_thread() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise SegmentInvalid("capture segment x is missing")

    got: list[int] = []
    with pytest.raises(SegmentInvalid, match="x is missing"):
        got.extend(prefetched(failing()))
    assert got == [1]


def test_closing_early_stops_the_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    items = prefetched(endless())
    assert next(items) == 0
    items.close()
    assert closed.is_set() and threading.active_count() == before


def test_reencoded_mp4_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("erin", sessions=(SessionSpec(0, 3),))])
    (plan,) = plan_files(fold(c.events), OutputOptions("mp4"))
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    assert remux(plan, c.files, first).packets == remux(plan, c.files, second).packets
    assert first.read_bytes() == second.read_bytes()


def test_a_missing_audio_segment_fails_the_threaded_mp4(tmp_path: Path) -> None:
    c = make_capture(tmp_path, [ParticipantSpec("erin", sessions=(SessionSpec(0, 2),))])
    (plan,) = plan_files(fold(c.events), OutputOptions("mp4"))
    audio = next(s for s in c.segments if s.kind == "audio")
    c.segment_path(audio).unlink()
    before = threading.active_count()
    with pytest.raises(SegmentInvalid, match=f"{audio.path} is missing"):
        remux(plan, c.files, tmp_path / "erin.mp4")
    assert threading.active_count() == before
