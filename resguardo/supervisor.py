"""``resguardo up``: the whole system as separate OS processes under one supervisor.

Embedded nats-server and PostgreSQL start first (unless RESGUARDO_NATS_URL / RESGUARDO_DATABASE_URL
name servers of your own), then the six services. A child that dies is restarted with backoff
and the log says so. SIGINT, SIGTERM and SIGHUP (the terminal closed) stop every child cleanly,
services first, servers last; if the supervisor itself is killed (SIGKILL, the OOM killer) every
child gets a parent-death signal from the kernel and stops by itself (``shared.procs``). One
supervisor per data dir: a lock in ``run/`` refuses a second one (``resguardo.datadir``), and a
new one first waits for, then stops, whatever an earlier one left running.

The embedded nats-server gets one user per service with only the rights that service needs
(``shared.embedded.SERVICE_RIGHTS``), plus an ``operator`` user for tools. Passwords are made once,
kept 0600 in ``<data dir>/secrets/nats/<user>.password``, and each child gets only its own, in
RESGUARDO_NATS_USER / RESGUARDO_NATS_PASSWORD (environment, never argv; never printed).
``run/endpoints.json`` (0600) holds the operator's NATS URL for tools and tests;
``run/status.json`` the state of every child, for ``resguardo status``.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shared import procs
from shared.config import CommonConfig, ConfigError, env_name, load, setting
from shared.embedded import OPERATOR, SERVICE_RIGHTS, python_env, system_users
from shared.files import write_private
from shared.tls import ensure_self_signed

from .children import Child
from .datadir import STATUS_NAME, AlreadyRunning, DataDirLock, leftovers, write_private_json
from .instances import Ports, layout
from .servers import EmbeddedServers

log = logging.getLogger("resguardo.supervisor")

SERVICES = ("credentials", "api", "proxy", "transcoder", "uploader", "notifier")
STATUS_EVERY_S = 1.0


@dataclass(frozen=True)
class UpConfig(CommonConfig):
    nats_port: int = setting(4222, "Port of the embedded nats-server (loopback only).")
    api_port: int = setting(8443, "HTTPS port of the API.")
    whip_port: int = setting(8444, "HTTPS port of the proxy's WHIP endpoint.")
    whip_public_url: str = setting(
        "", "Base URL participants use for WHIP. Default: https://127.0.0.1:<whip port>."
    )
    health_port_base: int = setting(
        9460,
        "`resguardo up` gives the services the health ports from this one on, in the order "
        "credentials, api, proxy, transcoder, uploader, notifier (9460-9465 by default). 0: any "
        "free port for each, recorded in <data dir>/run/<service>.health.",
    )

    def validate(self) -> None:
        super().validate()
        for name in ("nats_port", "api_port", "whip_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"{env_name(name)} must be a port number from 1 to 65535.")
        if self.health_port_base and not 0 < self.health_port_base < 65536 - len(SERVICES):
            raise ConfigError(
                f"{env_name('health_port_base')} must be 0 or a port number from 1 to "
                f"{65535 - len(SERVICES)}."
            )


def nats_passwords(directory: Path) -> dict[str, str]:
    """One password per NATS user, made once and kept in 0600 files under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    out: dict[str, str] = {}
    for user in (*SERVICE_RIGHTS, OPERATOR):
        path = directory / f"{user}.password"
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            value = ""
        if not value:
            value = secrets.token_urlsafe(32)
            write_private(path, value + "\n")
        out[user] = value
    return out


def with_login(url: str, user: str, password: str) -> str:
    """``nats://host:port`` with ``user:password@`` in it (for the operator's tools only)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{user}:{password}@{rest}"


def port_in_use(port: int) -> bool:
    """Whether something listens on ``port``. SO_REUSEADDR, as every server here binds: closed
    connections still in TIME_WAIT (after any API or WHIP traffic) must not read as "in use"."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Supervisor:
    def __init__(
        self, config: UpConfig, *, out: IO[str] = sys.stdout, instances: int = 1, cluster: int = 1
    ) -> None:
        self.config = config
        self.cluster_size = cluster
        self.out = out
        self.data_dir = config.data_dir.resolve()
        self.instance_count = instances
        ports = Ports(config.api_port, config.whip_port, config.health_port_base)
        self.instances = layout(
            SERVICES, instances, self.data_dir, ports, whip_public_url=config.whip_public_url
        )
        self.run_dir = self.data_dir / "run"
        self.lock = DataDirLock(self.run_dir)
        self.servers = EmbeddedServers(self.data_dir, self.run_dir, self._log_file)
        self.children: list[Child] = []
        self.started_wall = time.time()
        self._stopping = False
        self._status_at = 0.0
        self._logs: list[IO[bytes]] = []

    # -- start -------------------------------------------------------------------------------
    def _check_ports(self) -> None:
        wanted: list[tuple[str, int]] = []
        if not self.config.nats_url:
            wanted += [("nats_port", self.config.nats_port + i) for i in range(self.cluster_size)]
        for i in self.instances:
            if i.service in ("api", "proxy"):
                setting_name = "api_port" if i.service == "api" else "whip_port"
                wanted.append((setting_name, int(i.env[env_name(setting_name)])))
            if int(i.env[env_name("health_port")]):
                wanted.append(("health_port_base", int(i.env[env_name("health_port")])))
        for name, port in wanted:
            if port_in_use(port):
                raise ConfigError(
                    f"port {port} is already in use by another program; "
                    f"set {env_name(name)} to a free port."
                )

    def _stop_leftovers(self) -> None:
        """Processes an earlier supervisor of this data dir left (it was killed): they got their
        parent-death signal and are stopping; wait for them, then make sure."""
        old = leftovers(self.run_dir)
        if not old:
            return
        print(f"Waiting for {len(old)} process(es) of an earlier run to stop...", file=self.out)
        log.warning("earlier run still stopping", extra={"processes": sorted(old)})
        alive = procs.wait_gone(list(old.values()), self.config.drain_timeout_s + 5)
        procs.stop_processes(alive, grace_s=5)

    def _log_file(self, name: str) -> IO[bytes]:
        fh = (self.data_dir / "logs" / f"{name}.log").open("ab")
        self._logs.append(fh)
        return fh

    def _start_servers(self) -> tuple[str, str, dict[str, str], str]:
        nats_url = operator_url = self.config.nats_url
        passwords: dict[str, str] = {}
        if not nats_url:
            passwords = nats_passwords(self.data_dir / "secrets" / "nats")
            urls = self.servers.start_nats(
                port=self.config.nats_port, users=system_users(passwords), size=self.cluster_size
            )
            nats_url = ",".join(urls)
            operator_url = ",".join(with_login(u, OPERATOR, passwords[OPERATOR]) for u in urls)
        database_url = self.config.database_url or self.servers.start_postgres()
        return nats_url, operator_url, passwords, database_url

    def start(self) -> None:
        for sub in ("logs", "run", "secrets"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.lock.acquire()
        except AlreadyRunning as exc:
            raise ConfigError(str(exc)) from None
        for stale in ("endpoints.json", STATUS_NAME):  # a killed supervisor's
            (self.run_dir / stale).unlink(missing_ok=True)
        self._stop_leftovers()
        self._check_ports()
        ensure_self_signed(self.data_dir / "tls")
        nats_url, operator_url, passwords, database_url = self._start_servers()
        replicas = self.config.stream_replicas
        if self.servers.cluster is not None and env_name("stream_replicas") not in os.environ:
            replicas = min(3, self.cluster_size)  # R3 on a cluster of three or more
        common = python_env() | {
            env_name("nats_url"): nats_url,
            env_name("stream_replicas"): str(replicas),
            env_name("database_url"): database_url,
            env_name("drain_timeout_s"): str(self.config.drain_timeout_s),
            "PYTHONUNBUFFERED": "1",
        }
        for instance in self.instances:
            own = dict(instance.env)
            if passwords:
                login = {env_name("nats_user"): instance.service}
                own |= login | {env_name("nats_password"): passwords[instance.service]}
            child = Child(
                name=instance.name,
                argv=[sys.executable, "-m", f"services.{instance.service}"],
                env=common | own,
                log_path=self.data_dir / "logs" / f"{instance.name}.log",
                run_dir=self.run_dir,
                health_path=instance.health_path,
            )
            child.start()
            self.children.append(child)
            log.info("started", extra={"child": instance.name, "pid": child.pid})
        self._announce(operator_url, nats_url, passwords)

    def _announce(self, operator_url: str, nats_url: str, passwords: dict[str, str]) -> None:
        """endpoints.json for tools, status.json, and what a person needs to know."""
        apis = [i for i in self.instances if i.service == "api"]
        api_urls = [f"https://127.0.0.1:{i.env[env_name('api_port')]}" for i in apis]
        whip_bases = [u.rstrip("/") for u in apis[0].env[env_name("whip_public_url")].split(",")]
        secrets_dir = apis[0].data_dir / "secrets"  # the first API's tokens serve every API
        endpoints = {
            "api_url": api_urls[0],
            "api_urls": api_urls,
            "whip_base_url": f"{whip_bases[0]}/whip",
            "whip_base_urls": [f"{u}/whip" for u in whip_bases],
            "nats_url": operator_url,  # with the operator's login when the server is ours
            "nats_embedded": bool(self.servers.nodes),
            "nats_cluster": self.cluster_size,
            "database_url": self.servers.pg.url if self.servers.pg else "",  # no password in it
            "ca_file": str(self.data_dir / "tls" / "cert.pem"),
            "dev_token_file": str(secrets_dir / "dev-api-token"),
            "admin_token_file": str(secrets_dir / "admin-token"),
            "logs_dir": str(self.data_dir / "logs"),
            "status_file": str(self.run_dir / STATUS_NAME),
            "instances": self.instance_count,
            "pid": os.getpid(),
        }
        write_private_json(self.run_dir / "endpoints.json", endpoints)
        self.write_status(force=True)
        logins = f" (logins in {self.data_dir / 'secrets' / 'nats'})" if passwords else ""
        lines = ["Resguardo is up."]
        lines += [f"  API        {url}" for url in api_urls]
        lines += [f"  WHIP       {base}/whip/<recording_id>" for base in whip_bases]
        lines += [
            f"  NATS       {nats_url}{logins}",
            f"  API token  {endpoints['dev_token_file']} (created by the API on first start)",
            f"  CA cert    {endpoints['ca_file']}",
            f"  Logs       {endpoints['logs_dir']}",
            "Try `resguardo demo` and `resguardo status` in another terminal. "
            "Ctrl-C stops everything.",
        ]
        print("\n".join(lines), file=self.out, flush=True)

    # -- watch -------------------------------------------------------------------------------
    def poll_once(self) -> None:
        self.servers.restart_dead()
        for child in self.children:
            child.poll(time.monotonic())
        self.write_status()

    def write_status(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_EVERY_S:
            return
        self._status_at = now
        nats, postgres = self.servers.status()
        status = {
            "supervisor": {
                "pid": os.getpid(),
                "data_dir": str(self.data_dir),
                "started_at": self.started_wall,
            },
            "updated_at": time.time(),
            "stopping": self._stopping,
            "services": {c.name: c.status() for c in self.children},
            "nats": nats,
            "postgres": postgres,
        }
        write_private_json(self.run_dir / STATUS_NAME, status)

    def run(self) -> int:
        def on_signal(signum: int, _frame: Any) -> None:
            if not self._stopping:
                log.info("stopping", extra={"signal": signal.Signals(signum).name})
            self._stopping = True

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        try:
            self.start()
            while not self._stopping:
                self.poll_once()
                time.sleep(0.2)
        finally:
            if self.lock.held:  # not when another supervisor holds the data dir
                self.stop()
        return 0

    def stop(self) -> None:
        self._say("Stopping...")
        # Services first, all at once (each drains NATS and lets in-flight work be
        # redelivered), servers last.
        for child in self.children:
            child.ask_to_stop()
        deadline = time.monotonic() + self.config.drain_timeout_s + 5
        for child in self.children:
            child.wait_stopped(deadline)
        self.servers.stop()
        for path in ("endpoints.json", STATUS_NAME):
            (self.run_dir / path).unlink(missing_ok=True)
        for fh in self._logs:
            fh.close()
        self.lock.release()
        self._say("Stopped.")

    def _say(self, text: str) -> None:
        # The terminal may be gone (SIGHUP): writing to it must not stop the stop.
        try:
            print(text, file=self.out, flush=True)
        except OSError:
            pass


def up(instances: int = 1, cluster: int = 1) -> int:
    from shared import logs

    config = load(UpConfig)
    logs.setup("supervisor", config.log_level)
    return Supervisor(config, instances=instances, cluster=cluster).run()
