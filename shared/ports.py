"""Free ports for the servers that tests, benchmarks and ``resguardo up`` start on loopback.

A port the kernel picks (bind to port 0) comes from its ephemeral range, which is also where it
picks the source port of every outgoing connection and every other bind to port 0. Between
picking such a port and the server binding it, another process can take it: seen as a proxy
that could never bind its WHIP port, because a service's health listener (bound to port 0) had
got it first. So ports are picked at random *below* the ephemeral range, where the kernel never
hands out ports by itself, and in 10000-19999, clear of the chaos tool's fixed port blocks
(20000-32000). A port is checked by binding it (without SO_REUSEADDR, so one in TIME_WAIT is
skipped too) and never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOW, HIGH = 10_000, 20_000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_random = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to on ``host`` (see the module's docstring)."""
    high = min(HIGH, _ephemeral_low())
    if high - LOW >= 1_000:
        for _ in range(200):
            port = _random.randrange(LOW, high)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    with socket.socket() as s:  # the range is crowded or customised: let the kernel pick
        s.bind((host, 0))
        return int(s.getsockname()[1])
