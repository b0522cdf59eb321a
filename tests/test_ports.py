"""``free_port`` picks below the kernel's ephemeral range, where no bind to port 0 and no
outgoing connection can take the port before the server binds it."""

from __future__ import annotations

import socket

from shared import ports


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    low = ports._ephemeral_low()
    picked = [ports.free_port() for _ in range(50)]
    assert len(set(picked)) == 50  # never the same twice in one process
    for port in picked:
        assert ports.LOW <= port < min(ports.HIGH, low), port
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when handed out, so free now


def test_a_port_in_use_is_never_handed_out() -> None:
    holders = []
    try:
        # hold a thousand ports of the range: none of them may come back
        for port in range(ports.LOW, ports.LOW + 1000):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            s.listen()
            holders.append(s)
        held = {s.getsockname()[1] for s in holders}
        assert not held & {ports.free_port() for _ in range(200)}
    finally:
        for s in holders:
            s.close()
