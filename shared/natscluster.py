"""A JetStream cluster of nats-server nodes on this machine (``resguardo up --cluster N``, tests).

Each node has its own store dir, client, route and monitoring ports, the same users and
permissions, and ``sync_interval: always`` (``shared.embedded.nats_config``). Nodes are started
together (a JetStream cluster elects its meta leader only once a quorum of routes is up) and a
dead one is restarted on its own store, where it catches up from its peers.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from .embedded import ClusterRoutes, NatsServer, NatsUser, free_port

CLUSTER_NAME = "resguardo"


class NatsCluster:
    def __init__(
        self,
        data_dir: Path,
        size: int = 3,
        *,
        ports: list[int] | None = None,
        users: list[NatsUser] | None = None,
        logs: list[IO[Any]] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        client_ports = ports or [free_port() for _ in range(size)]
        route_ports = [free_port() for _ in range(size)]
        self.nodes: list[NatsServer] = []
        for i in range(size):
            peers = tuple(p for j, p in enumerate(route_ports) if j != i)
            self.nodes.append(
                NatsServer(
                    Path(data_dir) / f"node-{i + 1}",
                    port=client_ports[i],
                    users=users,
                    log=logs[i] if logs else None,
                    server_name=f"{CLUSTER_NAME}-{i + 1}",
                    cluster=ClusterRoutes(CLUSTER_NAME, route_ports[i], peers),
                    monitor_port=free_port(),
                )
            )

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as RESGUARDO_NATS_URL takes them."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_ready(timeout)
        return self

    def node_named(self, name: str) -> NatsServer:
        return next(n for n in self.nodes if n.server_name == name)

    def healthy(self, node: NatsServer) -> bool:
        """The node's own verdict: JetStream up, its meta group and assets current."""
        url = f"http://127.0.0.1:{node.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(json.loads(response.read()).get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.healthy(node) for node in self.nodes if node.proc):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the NATS cluster was not healthy within {timeout:.0f} s")

    def restart_dead(self) -> list[str]:
        """Start again, on its own store, every node that has exited; their names."""
        restarted = []
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is not None:
                node.start()
                restarted.append(node.server_name)
        return restarted

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
