"""``resguardo status [--json]``: is the system healthy, and if not, what is wrong.

Exit status 0 when healthy, 1 when anything is not (a service down or not ready, NATS or
PostgreSQL unreachable, a stream missing, `resguardo up` not running), so scripts and probes
can use it. See ``resguardo.health_report`` for where each figure comes from.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.config import CommonConfig, ConfigError, load

from ..cli import CliError
from ..client import human_size, print_json, table
from ..datadir import read_json
from ..health_report import gather


def _nats_login(url: str) -> tuple[str, str | None, str | None]:
    """``nats://user:pass@host[,...]`` split into the URL(s) without the login, the user and the
    password (the same login for every node of a cluster)."""
    urls = [urlsplit(u.strip()) for u in url.split(",") if u.strip()]
    if not urls or not urls[0].username:
        return url, os.environ.get("RESGUARDO_NATS_USER"), os.environ.get("RESGUARDO_NATS_PASSWORD")
    bare = ",".join(p._replace(netloc=p.netloc.rpartition("@")[2]).geturl() for p in urls)
    return bare, unquote(urls[0].username), unquote(urls[0].password or "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def render(report: dict[str, Any]) -> str:
    verdict = "healthy" if report["healthy"] else "UNHEALTHY"
    sup = report["supervisor"]
    who = f"supervisor pid {sup['pid']}" if sup.get("running") else "not running"
    out = [f"Resguardo on {report['data_dir']} ({who}): {verdict}"]
    out += [f"  - {p}" for p in report["problems"]]
    services = report["services"]
    if services:
        rows = [
            [
                name,
                s["state"],
                "yes" if s["ready"] else "no",
                str(s["pid"] or "-"),
                str(s["restarts"]),
                _duration(s["uptime_s"]),
                s["last_error"] or "-",
            ]
            for name, s in services.items()
        ]
        headers = ["SERVICE", "STATE", "READY", "PID", "RESTARTS", "UPTIME", "LAST ERROR"]
        out += ["", table(rows, headers)]
    nats_part = report["nats"]
    out.append("")
    if nats_part.get("connected"):
        server = nats_part["server"]
        embedded = ", embedded" if nats_part.get("embedded") else ""
        out.append(
            f"NATS {', '.join(nats_part['servers'])} ({server['name']} "
            f"{server['version']}{embedded}): connected"
        )
        rows = [
            [s["name"], str(s["messages"]), human_size(s["bytes"])] for s in nats_part["streams"]
        ]
        out += ["", table(rows, ["STREAM", "MESSAGES", "SIZE"])]
        rows = [
            [c["name"], c["stream"], str(c["pending"]), str(c["unacked"]), str(c["redelivered"])]
            for c in nats_part["consumers"]
        ]
        headers = ["CONSUMER", "STREAM", "PENDING", "UNACKED", "REDELIVERED"]
        out += ["", table(rows, headers)]
    else:
        out.append(f"NATS: not reachable ({nats_part.get('error', '')})")
    out += [
        "",
        f"Dead letters: {report['dead_letters'] if report['dead_letters'] is not None else '?'}",
    ]
    pg = report["postgres"]
    if not pg["configured"]:
        out.append("PostgreSQL: not configured (RESGUARDO_DATABASE_URL unset, none embedded)")
    elif pg.get("reachable"):
        out.append(f"PostgreSQL: reachable (version {pg['version']})")
    else:
        out.append(f"PostgreSQL: NOT reachable ({pg.get('error', '')})")
    tenants = report["backup"]["tenants"]
    total = sum(t["bytes"] for t in tenants.values())
    out.append(
        f"Backup {report['backup']['root']}: {human_size(total)} in {len(tenants)} tenant(s)"
    )
    if report["backup"].get("error"):
        out.append(f"  not readable: {report['backup']['error']}")
    if tenants:
        rows = [
            [name, str(t.get("recordings", "-")), str(t.get("files", "-")), human_size(t["bytes"])]
            for name, t in tenants.items()
        ]
        out += [table(rows, ["TENANT", "RECORDINGS", "FILES", "SIZE"])]
    return "\n".join(out)


def _run(args: argparse.Namespace) -> int:
    try:
        config = load(CommonConfig)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    data_dir = config.data_dir.resolve()
    endpoints = read_json(data_dir / "run" / "endpoints.json") or {}
    nats_url, user, password = _nats_login(config.nats_url or endpoints.get("nats_url", ""))
    report = asyncio.run(
        gather(
            data_dir,
            nats_url=nats_url,
            nats_user=user,
            nats_password=password,
            database_url=config.database_url or endpoints.get("database_url", ""),
            backup_root=Path(config.backup_root),
        )
    )
    if args.json:
        print_json(report)
    else:
        print(render(report))
    return 0 if report["healthy"] else 1


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="health of every service, NATS streams and consumers, PostgreSQL and the backup",
        description="Report the health of the system on this data dir. Exit status 1 when "
        "anything is unhealthy.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_run)
