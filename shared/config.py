"""Configuration from ``RESGUARDO_*`` environment variables, validated once at start.

Each service declares a frozen dataclass; each field's ``metadata["doc"]`` is its documentation
(the README table is generated from these, so it cannot drift). A bad value stops the process
with one sentence naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PREFIX = "RESGUARDO_"
T = TypeVar("T")


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the variable."""


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    # Secret settings stay out of repr(): a logged config object never shows them.
    return field(default=default, repr=not secret, metadata={"doc": doc, "secret": secret})


def _convert(name: str, raw: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw == "":
            return None
        return _convert(name, raw, args[0])
    if typ is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, not {raw!r}.")
    if typ is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None
    if typ is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}.") from None
    if typ is Path:
        return Path(raw).expanduser()
    if origin is tuple:
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def load(cls: type[T], env: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment; unset variables keep their defaults."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = env_name(f.name)
        if name in env:
            values[f.name] = _convert(name, env[name], hints[f.name])
    try:
        obj = cls(**values)
    except ConfigError:
        raise
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def describe(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every field: the source of the README's config table."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else ""
        rows.append(
            (
                env_name(f.name),
                "" if default is None else str(default),
                str(f.metadata.get("doc", "")),
            )
        )
    return rows


@dataclass(frozen=True)
class CommonConfig:
    """What every service needs: where the data lives and how to reach NATS and PostgreSQL."""

    data_dir: Path = setting(
        Path(".resguardo"), "Where embedded servers, backups, keys and logs go."
    )
    nats_url: str = setting(
        "",
        "NATS server URL, or several comma-separated (the nodes of a cluster). Empty: "
        "`resguardo up` starts an embedded nats-server under the data dir.",
    )
    stream_replicas: int = setting(
        1,
        "Replicas of every JetStream stream (3 on a cluster). A stream that exists with fewer "
        "is updated to this many at start.",
    )
    nats_user: str = setting(
        "",
        "This service's NATS user name. `resguardo up` sets it per service with the embedded "
        "server (each service has its own user and permissions); empty: connect without one.",
    )
    nats_password: str = setting(
        "",
        "This service's NATS password (set per service by `resguardo up`; never printed).",
        secret=True,
    )
    nats_password_file: Path | None = setting(
        None,
        "File holding this service's NATS password (a compose or Kubernetes secret), read at "
        "start when RESGUARDO_NATS_PASSWORD is empty: the password then never sits in the "
        "environment.",
    )
    database_url: str = setting(
        "",
        "PostgreSQL URL. Empty: `resguardo up` starts an embedded "
        "PostgreSQL (pgserver) under the data dir.",
    )
    backup_dir: Path | None = setting(
        None, "The temporary backup store (captures and outputs). Default: <data dir>/backup."
    )
    log_level: str = setting("INFO", "Log level: DEBUG, INFO, WARNING or ERROR.")
    health_host: str = setting(
        "127.0.0.1", "Address of this process's HTTP port for /healthz, /readyz and /metrics."
    )
    health_port: int = setting(
        0,
        "Port for /healthz, /readyz and /metrics of this process. 0: any free port, written to "
        "<data dir>/run/<service>.health. `resguardo up` gives each service its own from "
        "RESGUARDO_HEALTH_PORT_BASE.",
    )
    drain_timeout_s: float = setting(
        10.0,
        "Seconds a service may take to stop after SIGTERM (in-flight work is left unacked for "
        "redelivery, NATS is drained) before it exits regardless.",
    )

    @property
    def nats_urls(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def run_dir(self) -> Path:
        """Pid files, health URLs and the supervisor's status: this machine's, not shared."""
        return (self.data_dir / "run").resolve()

    def nats_login_password(self) -> str | None:
        """The NATS password: the setting, else the first line of its file (None: no login)."""
        if self.nats_password:
            return self.nats_password
        if self.nats_password_file is None:
            return None
        try:
            return self.nats_password_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(
                f"{env_name('nats_password_file')} could not be read ({exc.strerror})."
            ) from None

    @property
    def backup_root(self) -> Path:
        return (self.backup_dir or self.data_dir / "backup").resolve()

    def validate(self) -> None:
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"{env_name('log_level')} must be DEBUG, INFO, WARNING or ERROR, "
                f"not {self.log_level!r}."
            )
        if not 0 <= self.health_port < 65536:
            raise ConfigError(f"{env_name('health_port')} must be a port number from 0 to 65535.")
        if self.drain_timeout_s <= 0:
            raise ConfigError(f"{env_name('drain_timeout_s')} must be a positive number.")
        if any(not u.startswith(("nats://", "tls://")) for u in self.nats_urls):
            raise ConfigError(
                f"{env_name('nats_url')} must be nats:// or tls:// URLs, separated by commas."
            )
        if not 1 <= self.stream_replicas <= 5:
            raise ConfigError(f"{env_name('stream_replicas')} must be from 1 to 5.")
