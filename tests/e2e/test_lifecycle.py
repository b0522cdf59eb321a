"""Stops that leave nothing behind: whatever ends `resguardo up`, every process of its data dir
ends too, and a new `up` on the same data dir and ports is ready, even right after real traffic
(closed connections in TIME_WAIT on the API and WHIP ports). One supervisor per data dir."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from ..servers import REPO, wait_until
from .system import RunningSystem, start_system, stop_system

pytestmark = pytest.mark.slow

Known = tuple[int, float]  # pid and start time: a reused pid is not the same process


def processes_of(system: RunningSystem) -> dict[Known, str]:
    """The supervisor, everything below it, and anything whose command line names its data
    dir (PostgreSQL's ``-D``), as ``{(pid, create_time): command line}``."""
    found: dict[Known, str] = {}
    root = psutil.Process(system.proc.pid)
    for proc in [root, *root.children(recursive=True)]:
        found[(proc.pid, proc.create_time())] = " ".join(proc.cmdline())
    data_dir = str(system.data_dir)
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if data_dir in cmdline:
            found[(proc.pid, proc.info["create_time"])] = cmdline
    return found


def still_running(known: dict[Known, str]) -> dict[Known, str]:
    alive = {}
    for (pid, created), cmdline in known.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                alive[(pid, created)] = cmdline
        except psutil.NoSuchProcess:
            continue
    return alive


def make_traffic(system: RunningSystem) -> None:
    """Real requests to the API and the WHIP port, then connections that the server closes
    first (plain text on a TLS port), which leaves TIME_WAIT on the server's own ports."""
    system.cli("recordings", "list", "--json")
    context = ssl.create_default_context(cafile=system.endpoints["ca_file"])
    context.check_hostname = False
    for url in (system.endpoints["api_url"] + "/v1/recordings", system.endpoints["whip_base_url"]):
        try:
            urllib.request.urlopen(url + "/rec_nothing", context=context, timeout=10).close()
        except urllib.error.HTTPError as exc:  # 401/404: an answer is all we need
            exc.close()
    for name in ("API", "WHIP"):
        port = int(system.env[f"RESGUARDO_{name}_PORT"])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.settimeout(10)
            while s.recv(4096):  # until the server hangs up
                pass


def time_wait_ports() -> set[int]:
    return {
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_TIME_WAIT and c.laddr
    }


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_stop_by_any_signal_leaves_nothing_and_up_starts_again(tmp_path: Path, sig: str) -> None:
    system = start_system(tmp_path)
    again: RunningSystem | None = None
    try:
        make_traffic(system)
        ports = {int(system.env[f"RESGUARDO_{p}_PORT"]) for p in ("API", "WHIP")}
        assert ports & time_wait_ports(), "the traffic left no TIME_WAIT on our ports"
        known = processes_of(system)
        commands = " | ".join(known.values())
        for part in ("services.api", "services.uploader", "nats-server", "postgres"):
            assert part in commands, f"{part} is not among the processes of the data dir"

        system.proc.send_signal(getattr(signal, sig))
        wait_until(
            lambda: not still_running(known),
            timeout=20,
            interval=0.2,
            message=f"every process of the data dir to end after {sig}",
        )
        assert ports & time_wait_ports(), "TIME_WAIT ended before the restart: nothing tested"
        again = start_system(tmp_path, env=system.env)  # same data dir, same ports
        assert again.cli_json("recordings", "list") is not None
    finally:
        stop_system(system)
        if again is not None:
            stop_system(again)


def test_up_right_after_a_kill_waits_for_the_old_processes(tmp_path: Path) -> None:
    """No pause after SIGKILL: the new supervisor finds the old run's processes by their pid
    files, waits for them (they are stopping on their parent-death signal) and starts."""
    system = start_system(tmp_path)
    again: RunningSystem | None = None
    try:
        known = processes_of(system)
        system.proc.kill()
        system.proc.wait()
        again = start_system(tmp_path, env=system.env)
        assert not still_running(known), "an old process outlived the restart"
        assert again.cli_json("recordings", "list") is not None
    finally:
        if again is not None:
            stop_system(again)


def test_a_second_up_on_a_running_data_dir_is_refused_at_once(tmp_path: Path) -> None:
    system = start_system(tmp_path)
    try:
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "resguardo", "up"],
            cwd=REPO,
            env=system.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed = time.monotonic() - started
        assert second.returncode != 0
        message = second.stderr.strip().splitlines()[-1]
        assert f"pid {system.proc.pid}" in message, message
        assert str(system.data_dir) in message
        assert elapsed < 10, f"refused only after {elapsed:.1f} s"
        # The running system was not disturbed: its files are still there and it answers.
        assert (system.data_dir / "run" / "endpoints.json").exists()
        assert system.proc.poll() is None
        assert system.cli_json("recordings", "list") is not None
        assert os.path.exists(system.data_dir / "run" / "status.json")
    finally:
        stop_system(system)
