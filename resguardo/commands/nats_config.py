"""``resguardo nats-config``: the config files of a NATS JetStream cluster on its own machines.

The users, their permissions and ``sync_interval: always`` come from the same code as the embedded
server of ``resguardo up`` (``shared.embedded.nats_config`` and ``system_users``), so a
deployment's rights cannot drift from the ones the tests prove. Each node is a host of its own
(``<prefix>1``, ``<prefix>2``, ...: compose service names, or machines) on the same ports.

Passwords are read from files, one per user (``<secrets dir>/nats_<user>``, as compose secrets
are mounted), never from argv or the environment; the config files are written 0600.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared.embedded import OPERATOR, SERVICE_RIGHTS, ClusterRoutes, nats_config, system_users
from shared.files import write_private
from shared.natscluster import CLUSTER_NAME

from ..cli import CliError


def read_passwords(secrets_dir: Path) -> dict[str, str]:
    """``{user: password}`` for every service and the operator, from ``nats_<user>`` files."""
    passwords = {}
    for user in [*SERVICE_RIGHTS, OPERATOR]:
        path = secrets_dir / f"nats_{user}"
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise CliError(f"Cannot read NATS password file {path} ({exc.strerror}).") from None
        # The config quotes each password: a quote, backslash or space would break out of it.
        if not password or any(c.isspace() or c in "\"\\'" for c in password):
            raise CliError(f"{path} must hold one password with no spaces, quotes or backslashes.")
        passwords[user] = password
    return passwords


def node_configs(
    passwords: dict[str, str],
    *,
    nodes: int,
    host_prefix: str,
    client_port: int,
    route_port: int,
    monitor_port: int,
    store_dir: Path,
) -> dict[str, str]:
    """``{file name: config}`` for each node of the cluster (one node: no cluster block)."""
    users = system_users(passwords)
    hosts = [f"{host_prefix}{i}" for i in range(1, nodes + 1)]
    configs = {}
    for i, host in enumerate(hosts, start=1):
        peers = tuple(h for h in hosts if h != host)
        cluster = (
            ClusterRoutes(CLUSTER_NAME, route_port, (route_port,) * len(peers), peers)
            if nodes > 1
            else None
        )
        configs[f"{host}.conf"] = nats_config(
            port=client_port,
            store_dir=store_dir,
            users=users,
            monitor_port=monitor_port,
            server_name=f"{CLUSTER_NAME}-{i}",
            cluster=cluster,
            host="0.0.0.0",  # noqa: S104 (each node is a container or machine of its own)
        )
    return configs


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.cluster <= 9:
        raise CliError("--cluster must be from 1 to 9 nodes (3 or 5 for a quorum that survives).")
    configs = node_configs(
        read_passwords(args.secrets_dir),
        nodes=args.cluster,
        host_prefix=args.host_prefix,
        client_port=args.client_port,
        route_port=args.route_port,
        monitor_port=args.monitor_port,
        store_dir=args.store_dir,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in configs.items():
        write_private(args.out / name, text)  # it holds every user's password
        print(f"wrote {args.out / name}")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "nats-config",
        help="write the config files of a NATS cluster with Resguardo's users and rights",
        description="Write <out>/<prefix>N.conf for each node of a JetStream cluster, with every "
        "service's NATS user and permissions (as the embedded server has them) and "
        "sync_interval: always. Passwords come from <secrets-dir>/nats_<user> files.",
    )
    parser.add_argument("--cluster", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the config files")
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        default=Path("/run/secrets"),
        help="folder of the nats_<user> password files (default /run/secrets)",
    )
    parser.add_argument(
        "--host-prefix", default="nats-", help="node host names are <prefix>1..N (default nats-)"
    )
    parser.add_argument("--client-port", type=int, default=4222)
    parser.add_argument("--route-port", type=int, default=6222)
    parser.add_argument("--monitor-port", type=int, default=8222)
    parser.add_argument(
        "--store-dir", type=Path, default=Path("/data/jetstream"), help="JetStream store on a node"
    )
    parser.set_defaults(func=_run)
