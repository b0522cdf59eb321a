"""The parts of `resguardo status` that read files: the last error of a log, the backup's usage,
and the operator's NATS login taken out of a URL."""

from __future__ import annotations

import json
from pathlib import Path

from resguardo.commands.status import _nats_login
from resguardo.health_report import backup_usage, last_error_line


def log_line(level: str, msg: str, **extra: str) -> str:
    return json.dumps({"ts": "2026-12-01T10:00:00.000Z", "level": level, "msg": msg, **extra})


def test_the_newest_error_is_found_behind_later_info_lines(tmp_path: Path) -> None:
    log = tmp_path / "uploader.log"
    log.write_text(
        "\n".join(
            [
                log_line("error", "old failure"),
                log_line("error", "upload failed", error="StoreUnavailable: connection refused"),
                log_line("info", "uploaded"),
                log_line("warning", "slow"),
            ]
        )
        + "\n"
    )
    found = last_error_line(log)
    assert found == "2026-12-01T10:00:00.000Z upload failed: StoreUnavailable: connection refused"


def test_a_crash_printed_to_stderr_counts_and_its_traceback_frames_do_not(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    log.write_text(
        log_line("info", "started")
        + "\nTraceback (most recent call last):\n"
        + '  File "x.py", line 1, in <module>\n'
        + "RuntimeError: the database is gone\n"
    )
    assert last_error_line(log) == "RuntimeError: the database is gone"


def test_no_error_no_log(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    log.write_text(log_line("info", "started") + "\n")
    assert last_error_line(log) == ""
    assert last_error_line(tmp_path / "missing.log") == ""


def test_error_lines_are_redacted(tmp_path: Path) -> None:
    log = tmp_path / "vault.log"
    log.write_text(log_line("error", "connect failed to nats://operator:hunter2secret@host") + "\n")
    found = last_error_line(log)
    assert "hunter2secret" not in found and "[redacted]" in found


def test_backup_usage_per_tenant(tmp_path: Path) -> None:
    for tenant, recording, size in (
        ("ten_a", "rec_1", 10),
        ("ten_a", "rec_2", 5),
        ("ten_b", "rec_3", 7),
    ):
        folder = tmp_path / tenant / recording / "capture" / "p" / "t"
        folder.mkdir(parents=True)
        (folder / "000001.rgc").write_bytes(b"x" * size)
    (tmp_path / "ten_b" / "rec_3" / "output").mkdir()
    assert backup_usage(tmp_path) == {
        "ten_a": {"bytes": 15, "files": 2, "recordings": 2},
        "ten_b": {"bytes": 7, "files": 1, "recordings": 1},
    }
    assert backup_usage(tmp_path / "nothing") == {}


def test_the_login_is_taken_out_of_the_url() -> None:
    assert _nats_login("nats://operator:p%40ss@127.0.0.1:4222") == (
        "nats://127.0.0.1:4222",
        "operator",
        "p@ss",
    )
