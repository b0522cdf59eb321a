"""``resguardo up --instances N``: where each of N instances of every service lives on this machine.

With one instance (the default) every service shares the data dir, as always. With more, each
instance gets a data dir of its own (``<data>/instances/<service>-<i>/``) as it would on a machine
of its own, so that nothing works only because two instances happen to share a disk:

- the backup: the store named by RESGUARDO_BACKUP_URL, else ``file://<data>/backup`` used as a
  store; each instance's own backup folder is only its spool (``shared.backupstore.spool``);
- what every instance of a deployment must share (the vault's master and X25519 keys, the
  manifest-signing key, the TLS certificate) is named by its setting, pointing at the main data
  dir, unless the environment names it already;
- ports: instance ``i`` of the API and the proxy listen on the configured port + 10 * i; health
  ports follow on from RESGUARDO_HEALTH_PORT_BASE, five per instance;
- the API hands out WHIP URLs across every proxy instance (or RESGUARDO_WHIP_PUBLIC_URL, for a
  load balancer in front), and each proxy's resource URLs lead back to itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.config import env_name
from shared.health import health_file

PORT_STEP = 10  # between instances: 8443, 8453, ... and 8444, 8454, ...

SHARED_FILES = {
    "master_key_file": "keys/master.keys",
    "vault_key_file": "keys/vault-x25519.key",
    "signing_key_file": "keys/signing-ed25519.key",
    "tls_cert": "tls/cert.pem",
    "tls_key": "tls/key.pem",
}


@dataclass(frozen=True)
class Instance:
    service: str
    index: int
    name: str  # "api" with one instance, "api-1" with several
    data_dir: Path
    env: dict[str, str]  # settings of this instance alone
    health_path: Path  # where it writes its health URL


@dataclass(frozen=True)
class Ports:
    api: int
    whip: int
    health_base: int  # 0: any free port


def api_port(ports: Ports, index: int) -> int:
    return ports.api + PORT_STEP * index


def whip_port(ports: Ports, index: int) -> int:
    return ports.whip + PORT_STEP * index


def health_port(ports: Ports, services: tuple[str, ...], service: str, index: int) -> int:
    if not ports.health_base:
        return 0
    return ports.health_base + index * len(services) + services.index(service)


def proxy_urls(ports: Ports, count: int) -> list[str]:
    return [f"https://127.0.0.1:{whip_port(ports, i)}" for i in range(count)]


def layout(
    services: tuple[str, ...],
    count: int,
    data_dir: Path,
    ports: Ports,
    *,
    whip_public_url: str,
    environ: Mapping[str, str] = os.environ,
) -> list[Instance]:
    """Every instance of every service, in start order (instance 0 of each first)."""
    several = count > 1
    shared: dict[str, str] = {}
    if several:
        for name, rel in SHARED_FILES.items():
            if not environ.get(env_name(name)):
                shared[env_name(name)] = str(data_dir / rel)
        if not environ.get(env_name("backup_url")):
            shared[env_name("backup_url")] = (data_dir / "backup").as_uri()
    public = whip_public_url or ",".join(proxy_urls(ports, count))
    out = []
    for index in range(count):
        for service in services:
            name = f"{service}-{index}" if several else service
            home = data_dir / "instances" / name if several else data_dir
            env = shared | {
                env_name("data_dir"): str(home),
                env_name("api_port"): str(api_port(ports, index)),
                env_name("whip_port"): str(whip_port(ports, index)),
                env_name("whip_public_url"): public,
                env_name("health_port"): str(health_port(ports, services, service, index)),
            }
            if several and service == "proxy":
                env[env_name("whip_instance_url")] = proxy_urls(ports, count)[index]
            out.append(
                Instance(service, index, name, home, env, health_file(home / "run", service))
            )
    return out
