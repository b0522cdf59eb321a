"""The servers `resguardo up` embeds: nats-server (one node, or a JetStream cluster of N on this
machine) and PostgreSQL, each a child that dies with the supervisor, restarted on its own store
if it exits, and recorded in ``run/<name>.pid`` so a later supervisor finds what a killed one
left behind."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any

from shared import procs
from shared.embedded import NatsServer, NatsUser, Postgres
from shared.natscluster import NatsCluster

log = logging.getLogger("resguardo.supervisor")


class EmbeddedServers:
    def __init__(self, data_dir: Path, run_dir: Path, log_file: Any) -> None:
        self.data_dir = data_dir
        self.run_dir = run_dir
        self._log_file = log_file  # name -> an open log file, closed by the supervisor
        self.nodes: list[NatsServer] = []
        self.cluster: NatsCluster | None = None
        self.pg: Postgres | None = None

    def start_nats(self, *, port: int, users: list[NatsUser], size: int) -> list[str]:
        """One node on ``port``, or ``size`` clustered nodes on ``port``, ``port + 1``, ...;
        returns their client URLs."""
        if size == 1:
            node = NatsServer(
                self.data_dir / "nats", port=port, users=users, log=self._log_file("nats-server")
            ).start()
            self.nodes = [node]
        else:
            logs: list[IO[Any]] = [self._log_file(f"nats-server-{i + 1}") for i in range(size)]
            self.cluster = NatsCluster(
                self.data_dir / "nats-cluster",
                size,
                ports=[port + i for i in range(size)],
                users=users,
                logs=logs,
            ).start()
            self.nodes = self.cluster.nodes
        for node in self.nodes:
            self._record(node)
        return [node.url for node in self.nodes]

    def start_postgres(self) -> str:
        self.pg = Postgres(self.data_dir / "postgres", log=self._log_file("postgres")).start()
        procs.write_pid(self.run_dir / "postgres.pid", self.pg.proc.pid)  # type: ignore[union-attr]
        return self.pg.url

    def _record(self, node: NatsServer) -> None:
        if node.proc is not None:
            procs.write_pid(self.run_dir / f"{node.server_name}.nats.pid", node.proc.pid)

    def restart_dead(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is not None:
                log.warning(
                    "nats-server exited; restarting it on the same store",
                    extra={"node": node.server_name, "code": node.proc.returncode},
                )
                node.start()
                self._record(node)
        if self.pg and self.pg.proc and self.pg.proc.poll() is not None:
            log.warning(
                "postgres exited; restarting it on the same data",
                extra={"code": self.pg.proc.returncode},
            )
            self.start_postgres()

    def status(self) -> tuple[dict[str, Any], dict[str, Any]]:
        nats: dict[str, Any] = {"embedded": bool(self.nodes)}
        if self.nodes:
            nats |= {
                "url": ",".join(n.url for n in self.nodes),
                "pid": self.nodes[0].proc.pid if self.nodes[0].proc else None,
                "nodes": [
                    {
                        "name": n.server_name,
                        "url": n.url,
                        "monitor_url": f"http://127.0.0.1:{n.monitor_port}"
                        if n.monitor_port
                        else "",
                        "pid": n.proc.pid if n.proc and n.proc.poll() is None else None,
                    }
                    for n in self.nodes
                ],
            }
        pg = {"embedded": self.pg is not None, "pid": self.pg.pid if self.pg else None}
        return nats, pg

    def stop(self) -> None:
        """After the services: NATS, then PostgreSQL."""
        for node in self.nodes:
            node.stop()
            (self.run_dir / f"{node.server_name}.nats.pid").unlink(missing_ok=True)
        if self.pg:
            self.pg.stop()
            (self.run_dir / "postgres.pid").unlink(missing_ok=True)
