"""A session's media sockets: big receive buffers, and taking in what a publisher already sent
before its session is closed.

A proxy that is behind (CPU-starved by a crowd joining at once, a loaded machine) holds the last
second or so of a publisher's media in its sockets' receive buffers and in aioice's queue, not
yet decrypted. A DELETE, a stop or a shutdown handled then would close the peer connection on top
of it, and those frames, sent before the end, would never reach the capture: measured with 16
publishers joining together on a 2-core machine loaded with 6 busy processes, the last 0.8-4 s
of every track was cut off this way (``tests/proxy/test_first_second.py``).
``take_in_received`` lets the session's DTLS task work through that backlog first.

Reaches into aiortc/aioice privates (pinned versions): the ICE connection's ``_queue`` (an
``asyncio.Queue`` of datagrams the DTLS task reads) and its protocols' sockets. If they are not
there, nothing is waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import sys
import time
from typing import Any

from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

# At most this long (a DELETE's answer waits for it): with 16 publishers leaving together from
# a proxy starved by 8 busy processes on 2 cores, the slowest took 5 s.
DRAIN_TIMEOUT_S = 10.0
POLL_S = 0.01


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int) -> None:
    """Ask for ``size`` bytes of receive buffer on each of the session's ICE sockets.

    The default (~200 KB, some 90 packets) overflows, and drops media, when the event loop is
    held up for a second or so (a busy machine, a slow disk); the kernel caps the size at
    net.core.rmem_max. Reaches into aiortc/aioice privates (pinned versions): a failure here
    only leaves the default.
    """
    if size <= 0:
        return
    for sock in _sockets(_ice_connections(pc, connected_only=False)):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            if _receive_buffer(sock) < size:
                _force_receive_buffer(sock, size)


_capped_warned = False
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux


def _receive_buffer(sock: Any) -> int:
    """The receive buffer the kernel gave, in the units it was asked in: Linux reports twice
    the size set (it counts its own bookkeeping), so a buffer capped at half the ask would
    otherwise pass for the whole."""
    got = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return got // 2 if sys.platform.startswith("linux") else got


def _force_receive_buffer(sock: Any, size: int) -> None:
    """net.core.rmem_max capped the buffer: past the cap with CAP_NET_ADMIN, else say so once
    per process (a small buffer loses media whenever the proxy falls behind, e.g. as a crowd
    joins)."""
    global _capped_warned
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    got = _receive_buffer(sock)
    if got < size and not _capped_warned:
        _capped_warned = True
        log.warning(
            "UDP receive buffers capped by the kernel; raise net.core.rmem_max",
            extra={"asked_bytes": size, "got_bytes": got},
        )


def _ice_connections(pc: Any, *, connected_only: bool = True) -> list[Any]:
    """The session's ICE connections (one with BUNDLE), each once; ``connected_only``: those
    whose DTLS is connected (else no DTLS task reads what is queued)."""
    seen: dict[int, Any] = {}
    for t in pc.getTransceivers():
        try:
            dtls = t.receiver.transport
            conn = dtls.transport._connection
        except AttributeError:
            continue
        if not connected_only or dtls.state == "connected":
            seen.setdefault(id(conn), conn)
    return list(seen.values())


def _sockets(connections: list[Any]) -> list[Any]:
    """The open UDP sockets of ``connections``' candidates, each once."""
    socks: dict[int, Any] = {}
    for conn in connections:
        for protocol in getattr(conn, "_protocols", ()):
            transport = getattr(protocol, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None and sock.fileno() >= 0:
                socks.setdefault(sock.fileno(), sock)
    return list(socks.values())


def _idle(connections: list[Any], fds: list[int]) -> bool:
    """Nothing left to take in: no datagram in the kernel, none in aioice's queue, and the DTLS
    task waiting for the next one (its ``get`` pending), so it is not still handling the last."""
    for conn in connections:
        q = getattr(conn, "_queue", None)
        if not isinstance(q, asyncio.Queue):
            continue
        getters = getattr(q, "_getters", None)
        if not q.empty() or not getters or all(g.done() for g in getters):
            return False
    if fds:
        readable, _, _ = select.select(fds, [], [], 0)
        if readable:
            return False
    return True


async def take_in_received(pc: Any, timeout: float = DRAIN_TIMEOUT_S) -> float:
    """Wait until everything the peer connection has received is handed to its receivers (and
    from them to the captures), or ``timeout``; returns how long it took.

    Done as soon as the connection is caught up once: a publisher still sending live leaves gaps
    between its packets, so a proxy that keeps up returns at once, and one that is behind takes
    in its backlog, and what keeps arriving meanwhile.
    """
    connections = _ice_connections(pc)
    if not connections:
        return 0.0
    fds = [sock.fileno() for sock in _sockets(connections)]
    start = time.monotonic()
    # the DTLS task may not have asked for a datagram yet: give it a turn before judging
    await asyncio.sleep(0)
    while not _idle(connections, fds):
        if pc.connectionState != "connected":
            break  # closed meanwhile: nothing will read what is left
        if time.monotonic() - start >= timeout:
            log.warning(
                "media still arriving at the end of a session; closing anyway",
                extra={"waited_s": round(timeout, 2)},
            )
            break
        await asyncio.sleep(POLL_S)
    return time.monotonic() - start
