"""What ``resguardo status`` reports, gathered from the parts themselves: the supervisor's
``run/status.json``, each service's ``/readyz``, JetStream's stream and consumer info, a query to
PostgreSQL and a walk of the backup folder. Every probe is bounded in time, so a part that hangs
shows as unhealthy instead of hanging the report.

The report is a plain dict (the ``--json`` output); ``problems`` lists, one sentence each, why it
is unhealthy, and is empty when everything is.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats

from shared import natsio
from shared.events import STREAMS
from shared.logs import redact_text

from .datadir import STATUS_NAME, read_json

PROBE_TIMEOUT_S = 3.0
STALE_STATUS_S = 10.0  # the supervisor rewrites status.json every second while it lives
LOG_TAIL_BYTES = 256 * 1024


def last_error_line(log_path: Path) -> str:
    """The newest error in a service's log: a JSON line at level error or critical, or a plain
    line that is not a traceback frame (what a crashing process printed to stderr)."""
    try:
        with log_path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            lines = fh.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    for line in reversed(lines):
        if not line.strip() or line[0].isspace() or line.startswith("Traceback"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            return redact_text(line)[:300]
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            detail = f": {entry['error']}" if entry.get("error") else ""
            return redact_text(f"{entry.get('ts', '')} {entry.get('msg', '')}{detail}")[:300]
    return ""


def _files(root: Path) -> Iterator[os.DirEntry[str]]:
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        yield entry
        except FileNotFoundError:
            continue


def backup_usage(root: Path) -> dict[str, dict[str, int]]:
    """Bytes, files and recordings per tenant (``<root>/<tenant>/<recording>/...``)."""
    usage: dict[str, dict[str, int]] = {}
    if not root.is_dir():
        return usage
    for tenant in sorted(p for p in root.iterdir() if p.is_dir()):
        files = list(_files(tenant))
        usage[tenant.name] = {
            "bytes": sum(f.stat(follow_symlinks=False).st_size for f in files),
            "files": len(files),
            "recordings": sum(1 for p in tenant.iterdir() if p.is_dir()),
        }
    return usage


async def backup_report(root: Path) -> dict[str, Any]:
    """Usage per tenant: of the object store when RESGUARDO_BACKUP_URL names one, else of the
    backup folder (with files and recordings counted too)."""
    if not os.environ.get("RESGUARDO_BACKUP_URL"):
        return {"root": str(root), "tenants": backup_usage(root)}
    from shared.backupstore.config import from_env

    try:
        store = from_env(root)
    except Exception as exc:  # a ConfigError: one sentence naming the variable
        return {"root": "", "tenants": {}, "error": str(exc)}
    try:
        usage = await asyncio.wait_for(store.usage_by_tenant(), PROBE_TIMEOUT_S * 4)
        tenants = {name: {"bytes": size} for name, size in sorted(usage.items())}
        return {"root": store.url, "tenants": tenants}
    except Exception as exc:
        return {"root": store.url, "tenants": {}, "error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        await store.close()


async def _readiness(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    if not url:
        return {"ready": False, "checks": {}, "error": "no health URL recorded yet"}
    try:
        async with session.get(url + "/readyz") as response:
            body = await response.json(content_type=None)
            return {"ready": bool(body.get("ready")), "checks": body.get("checks", {})}
    except TimeoutError:
        return {"ready": False, "checks": {}, "error": f"no answer within {PROBE_TIMEOUT_S:.0f} s"}
    except (aiohttp.ClientError, ValueError) as exc:
        return {"ready": False, "checks": {}, "error": f"{type(exc).__name__}: {exc}"[:200]}


async def services_report(supervisor: dict[str, Any]) -> dict[str, dict[str, Any]]:
    now = time.time()
    out: dict[str, dict[str, Any]] = {}
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        names = list(supervisor.get("services", {}))
        states = [supervisor["services"][n] for n in names]
        ready = await asyncio.gather(*(_readiness(session, s["health_url"]) for s in states))
    for name, state, readiness in zip(names, states, ready, strict=True):
        started = state.get("started_at")
        out[name] = {
            "state": state["state"],
            "pid": state.get("pid"),
            "restarts": state.get("restarts", 0),
            "uptime_s": round(now - started, 1) if started else None,
            "ready": readiness["ready"] and state["state"] == "up",
            "checks": readiness["checks"],
            "health_url": state.get("health_url", ""),
            "last_error": last_error_line(Path(state["log"])) if state.get("log") else "",
        } | ({"probe_error": readiness["error"]} if "error" in readiness else {})
    return out


async def nats_report(url: str, user: str | None, password: str | None) -> dict[str, Any]:
    nc = await nats.connect(
        url.split(","),
        user=user,
        password=password,
        name="resguardo-status",
        inbox_prefix=natsio.inbox_prefix(user),
        connect_timeout=PROBE_TIMEOUT_S,
        max_reconnect_attempts=0,
        allow_reconnect=False,
    )
    try:
        js = nc.jetstream(timeout=PROBE_TIMEOUT_S)
        streams, consumers = [], []
        for info in await js.streams_info():
            name = str(info.config.name)
            streams.append(
                {"name": name, "messages": info.state.messages, "bytes": info.state.bytes}
            )
            for consumer in await js.consumers_info(name):
                consumers.append(
                    {
                        "stream": name,
                        "name": consumer.name,
                        "durable": bool(consumer.config.durable_name),
                        "pending": consumer.num_pending or 0,
                        "unacked": consumer.num_ack_pending or 0,
                        "redelivered": consumer.num_redelivered or 0,
                    }
                )
        server = nc._server_info  # the INFO the server sent: its id, name and version
        return {
            "connected": True,
            "servers": [str(u.netloc.rpartition("@")[2]) for u in nc.servers],
            "server": {"name": server.get("server_name"), "version": server.get("version")},
            "streams": streams,
            "consumers": [c for c in consumers if c["durable"]],
        }
    finally:
        await nc.close()


async def postgres_report(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT_S)
    try:
        version = await conn.fetchval("SHOW server_version", timeout=PROBE_TIMEOUT_S)
    finally:
        await conn.close(timeout=PROBE_TIMEOUT_S)
    return {"reachable": True, "version": str(version)}


def _problems(report: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in report["services"].items():
        if service["state"] != "up":
            problems.append(f"{name} is down (restarts: {service['restarts']}).")
        elif not service["ready"]:
            failing = [f"{k}: {v}" for k, v in service["checks"].items() if v != "ok"]
            why = "; ".join(failing) or service.get("probe_error", "no answer")
            problems.append(f"{name} is not ready ({why}).")
    nats_part = report["nats"]
    if not nats_part.get("connected"):
        problems.append(f"NATS is not reachable ({nats_part.get('error', 'unknown')}).")
    else:
        have = {s["name"] for s in nats_part["streams"]}
        problems += [f"stream {s.name} is missing." for s in STREAMS if s.name not in have]
    pg = report["postgres"]
    if pg.get("configured") and not pg.get("reachable"):
        problems.append(f"PostgreSQL is not reachable ({pg.get('error', 'unknown')}).")
    return problems


async def gather(
    data_dir: Path,
    *,
    nats_url: str,
    nats_user: str | None,
    nats_password: str | None,
    database_url: str,
    backup_root: Path,
) -> dict[str, Any]:
    supervisor = read_json(data_dir / "run" / STATUS_NAME) or {}
    fresh = bool(supervisor) and time.time() - supervisor.get("updated_at", 0) < STALE_STATUS_S
    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "supervisor": supervisor.get("supervisor", {}) | {"running": fresh},
        "services": await services_report(supervisor) if fresh else {},
    }
    try:
        if not nats_url:
            raise ValueError(
                "no NATS URL: the system is not running and RESGUARDO_NATS_URL is unset"
            )
        report["nats"] = await nats_report(nats_url, nats_user, nats_password)
    except Exception as exc:
        error = redact_text(f"{type(exc).__name__}: {exc}")[:300]  # may quote a login URL
        report["nats"] = {"connected": False, "error": error}
    report["nats"] |= {
        k: v for k, v in supervisor.get("nats", {}).items() if k in ("pid", "embedded")
    }
    deadletters = [s for s in report["nats"].get("streams", []) if s["name"] == "DEADLETTER"]
    report["dead_letters"] = deadletters[0]["messages"] if deadletters else None
    report["postgres"] = {"configured": bool(database_url)}
    if database_url:
        try:
            report["postgres"] |= await postgres_report(database_url)
        except Exception as exc:
            error = redact_text(f"{type(exc).__name__}: {exc}")[:200]
            report["postgres"] |= {"reachable": False, "error": error}
    report["postgres"] |= {k: v for k, v in supervisor.get("postgres", {}).items() if k == "pid"}
    report["backup"] = await backup_report(backup_root)
    report["problems"] = _problems(report)
    if report["backup"].get("error"):
        report["problems"].append(
            f"the backup store is not readable ({report['backup']['error']})."
        )
    if not fresh:
        report["problems"].insert(0, f"`resguardo up` is not running on data dir {data_dir}.")
    report["healthy"] = not report["problems"]
    return report
