"""``resguardo up``: the whole system as separate OS processes under one supervisor.

Embedded nats-server and PostgreSQL start first (unless RESGUARDO_NATS_URL / RESGUARDO_DATABASE_URL
name servers of your own), then the five services. A child that dies is restarted with backoff
and the log says so; SIGINT/SIGTERM stops every child cleanly, services first, servers last.

The embedded nats-server gets one user per service with only the rights that service needs
(``shared.embedded.SERVICE_RIGHTS``), plus an ``operator`` user for tools. Passwords are made once,
kept 0600 in ``<data dir>/secrets/nats/<user>.password``, and each child gets only its own, in
RESGUARDO_NATS_USER / RESGUARDO_NATS_PASSWORD (environment, never argv; never printed).
``run/endpoints.json`` (0600) holds the operator's NATS URL for tools and tests.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shared.config import CommonConfig, ConfigError, env_name, load, setting
from shared.embedded import OPERATOR, SERVICE_RIGHTS, NatsServer, Postgres, python_env, system_users
from shared.tls import ensure_self_signed

log = logging.getLogger("resguardo.supervisor")

SERVICES = ("credentials", "api", "proxy", "transcoder", "uploader")
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class UpConfig(CommonConfig):
    nats_port: int = setting(4222, "Port of the embedded nats-server (loopback only).")
    api_port: int = setting(8443, "HTTPS port of the API.")
    whip_port: int = setting(8444, "HTTPS port of the proxy's WHIP endpoint.")
    whip_public_url: str = setting(
        "", "Base URL participants use for WHIP. Default: https://127.0.0.1:<whip port>."
    )

    def validate(self) -> None:
        super().validate()
        for name in ("nats_port", "api_port", "whip_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"{env_name(name)} must be a port number from 1 to 65535.")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        # Operators (and the crash tests) find each service's current pid here.
        self.pid_path.write_text(f"{self.proc.pid}\n")

    @property
    def pid_path(self) -> Path:
        return self.log_path.parent.parent / "run" / f"{self.name}.pid"

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        self.pid_path.unlink(missing_ok=True)


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
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(value + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        out[user] = value
    return out


def with_login(url: str, user: str, password: str) -> str:
    """``nats://host:port`` with ``user:password@`` in it (for the operator's tools only)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{user}:{password}@{rest}"


class Supervisor:
    def __init__(self, config: UpConfig, *, out: IO[str] = sys.stdout) -> None:
        self.config = config
        self.out = out
        self.data_dir = config.data_dir.resolve()
        self.nats: NatsServer | None = None
        self.pg: Postgres | None = None
        self.children: list[Child] = []
        self._stopping = False

    # -- start -------------------------------------------------------------------------------
    def _check_ports(self) -> None:
        wanted = [("api_port", self.config.api_port), ("whip_port", self.config.whip_port)]
        if not self.config.nats_url:
            wanted.append(("nats_port", self.config.nats_port))
        for name, port in wanted:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise ConfigError(
                        f"port {port} is already in use (is another `resguardo up` "
                        f"running?); set {env_name(name)} to a free port."
                    ) from None

    def start(self) -> None:
        self._check_ports()
        for sub in ("logs", "run", "secrets"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        ensure_self_signed(self.data_dir / "tls")
        nats_url = self.config.nats_url
        operator_url = nats_url
        passwords: dict[str, str] = {}
        if not nats_url:
            passwords = nats_passwords(self.data_dir / "secrets" / "nats")
            self._nats_log = (self.data_dir / "logs" / "nats-server.log").open("ab")
            self.nats = NatsServer(
                self.data_dir / "nats",
                port=self.config.nats_port,
                users=system_users(passwords),
                log=self._nats_log,
            ).start()
            nats_url = self.nats.url
            operator_url = with_login(nats_url, OPERATOR, passwords[OPERATOR])
        database_url = self.config.database_url
        if not database_url:
            self.pg = Postgres(self.data_dir / "postgres").start()
            database_url = self.pg.url
        whip_public = self.config.whip_public_url or f"https://127.0.0.1:{self.config.whip_port}"
        api_url = f"https://127.0.0.1:{self.config.api_port}"
        env = python_env() | {
            env_name("data_dir"): str(self.data_dir),
            env_name("nats_url"): nats_url,
            env_name("database_url"): database_url,
            env_name("api_port"): str(self.config.api_port),
            env_name("whip_port"): str(self.config.whip_port),
            env_name("whip_public_url"): whip_public,
            "PYTHONUNBUFFERED": "1",
        }
        for name in SERVICES:
            login = (
                {env_name("nats_user"): name, env_name("nats_password"): passwords[name]}
                if passwords
                else {}
            )
            child = Child(
                name=name,
                argv=[sys.executable, "-m", f"services.{name}"],
                env=env | login,
                log_path=self.data_dir / "logs" / f"{name}.log",
            )
            child.start()
            self.children.append(child)
            log.info("started", extra={"child": name, "pid": child.proc.pid if child.proc else 0})
        endpoints = {
            "api_url": api_url,
            "whip_base_url": f"{whip_public}/whip",
            "nats_url": operator_url,  # with the operator's login when the server is ours
            "ca_file": str(self.data_dir / "tls" / "cert.pem"),
            "dev_token_file": str(self.data_dir / "secrets" / "dev-api-token"),
            "admin_token_file": str(self.data_dir / "secrets" / "admin-token"),
            "logs_dir": str(self.data_dir / "logs"),
            "pid": os.getpid(),
        }
        tmp = self.data_dir / "run" / "endpoints.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(endpoints, indent=2) + "\n")
        tmp.replace(self.data_dir / "run" / "endpoints.json")
        logins = f" (logins in {self.data_dir / 'secrets' / 'nats'})" if passwords else ""
        print(
            "Resguardo is up.\n"
            f"  API        {api_url}\n"
            f"  WHIP       {whip_public}/whip/<recording_id>\n"
            f"  NATS       {nats_url}{logins}\n"
            f"  API token  {endpoints['dev_token_file']} (created by the API on first start)\n"
            f"  CA cert    {endpoints['ca_file']}\n"
            f"  Logs       {endpoints['logs_dir']}\n"
            "Try `resguardo demo` in another terminal. Ctrl-C stops everything.",
            file=self.out,
            flush=True,
        )

    # -- watch -------------------------------------------------------------------------------
    def poll_once(self) -> None:
        now = time.monotonic()
        if self.nats and self.nats.proc and self.nats.proc.poll() is not None:
            log.warning(
                "nats-server exited; restarting it on the same store",
                extra={"code": self.nats.proc.returncode},
            )
            self.nats.start()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                if child.proc is None and now >= child.next_start:
                    child.start()
                    log.warning(
                        "restarted", extra={"child": child.name, "restarts": child.restarts}
                    )
                elif child.proc is not None and now - child.started_at > 60:
                    child.restarts = 0  # healthy for a minute: forgive earlier crashes
                continue
            code = child.proc.returncode
            child.restarts += 1
            backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** (child.restarts - 1))
            log.warning(
                "child exited; restarting",
                extra={"child": child.name, "code": code, "in_s": backoff},
            )
            child.proc = None
            child.next_start = now + backoff

    def run(self) -> int:
        def on_signal(signum: int, _frame: Any) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start()
            while not self._stopping:
                self.poll_once()
                time.sleep(0.2)
        finally:
            self.stop()
        return 0

    def stop(self) -> None:
        print("Stopping...", file=self.out, flush=True)
        # Services first (they drain NATS and finish handlers), servers last.
        for child in reversed(self.children):
            child.stop()
        if self.nats:
            self.nats.stop()
        if self.pg:
            self.pg.stop()
        endpoints = self.data_dir / "run" / "endpoints.json"
        endpoints.unlink(missing_ok=True)
        print("Stopped.", file=self.out, flush=True)


def up() -> int:
    from shared import logs

    config = load(UpConfig)
    logs.setup("supervisor", config.log_level)
    return Supervisor(config).run()
