"""The canary: a destination whose secret is a unique string runs a full recording through
`resguardo up`, and the string appears nowhere it must not: no file under the data dir (logs,
the JetStream store, PostgreSQL's files), no message of any stream, no row of any table, no
process's argv or environment, no API response or CLI output."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import nats
import pytest

from resguardo.publisher import publish

from ..servers import MotoS3
from .system import RunningSystem, start_system, stop_system

SECONDS = 4.0


class Seen:
    """Everything the user got back: every CLI stdout and stderr."""

    def __init__(self, system: RunningSystem) -> None:
        self.system = system
        self.texts: list[str] = []

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.system.cli(*args, check=check)
        self.texts.append(result.stdout + result.stderr)
        return result

    def json(self, *args: str) -> dict[str, object]:
        out = json.loads(self.cli(*args, "--json").stdout)
        assert isinstance(out, dict | list)
        return out  # type: ignore[return-value]


def raw_api(system: RunningSystem, method: str, path: str, body: object = None) -> str:
    """One API request as bytes on the wire would give them back: the raw response body."""
    from shared.tls import client_context

    token = (system.data_dir / "secrets" / "dev-api-token").read_text().strip()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(system.endpoints["api_url"] + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    context = client_context(Path(system.endpoints["ca_file"]))
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return str(resp.status) + " " + resp.read().decode()
    except urllib.error.HTTPError as exc:
        return str(exc.code) + " " + exc.read().decode()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def processes_of(system: RunningSystem) -> list[int]:
    """The supervisor and every process below it (services, nats-server, PostgreSQL)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [system.proc.pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    # pgserver's postgres is not a child of the supervisor: add it by its pid file.
    pm = system.data_dir / "postgres" / "postmaster.pid"
    if pm.exists():
        root = int(pm.read_text().split()[0])
        todo = [root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


async def all_stream_messages(nats_url: str) -> tuple[int, bytes]:
    """Every message of every stream, read fully (data and headers)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    count, blob = 0, bytearray()
    try:
        for info in await js.streams_info():
            state = info.state
            if not state.messages:
                continue
            for seq in range(max(state.first_seq, 1), state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except nats.js.errors.NotFoundError:
                    continue  # deleted (none are, but do not fail on a gap)
                count += 1
                blob += msg.data or b""
                blob += json.dumps(msg.headers or {}).encode()
                blob += (msg.subject or "").encode()
    finally:
        await nc.close()
    return count, bytes(blob)


async def dump_database(url: str) -> tuple[int, str, bytes]:
    """Every row of every table of every schema as text, plus bytea columns as raw bytes."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        )
        text: list[str] = []
        raw = bytearray()
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            try:
                rows = await conn.fetch(f"SELECT x::text AS row FROM {name} x")
            except asyncpg.PostgresError:
                continue  # e.g. a catalog that cannot be read as a row; nothing of ours
            text.extend(r["row"] for r in rows)
            cols = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
                "AND table_name = $2 AND data_type = 'bytea'",
                t["table_schema"],
                t["table_name"],
            )
            for c in cols:
                for r in await conn.fetch(f'SELECT "{c["column_name"]}" AS v FROM {name}'):
                    raw += bytes(r["v"] or b"")
        return len(tables), "\n".join(text), bytes(raw)
    finally:
        await conn.close()


@pytest.mark.slow
def test_the_canary_secret_appears_nowhere(tmp_path: Path, s3_server: MotoS3) -> None:
    canary = "CANARY-" + secrets.token_hex(16)
    system = start_system(tmp_path)
    try:
        seen = Seen(system)
        s3_server.client().create_bucket(Bucket="canary-bucket")
        config = tmp_path / "canary-destination.json"  # outside the data dir
        config.write_text(
            json.dumps(
                {
                    "bucket": "canary-bucket",
                    "region": s3_server.region,
                    "endpoint_url": s3_server.url,
                    "prefix": "calls",
                    "access_key_id": s3_server.access_key,
                    "secret_access_key": canary,  # moto accepts any secret
                }
            )
        )
        seen.json(
            "destinations", "add", "vault-canary", "--provider", "s3", "--config", str(config)
        )
        # Failure paths get the secret too: a duplicate, and an unknown field holding it.
        seen.cli(
            "destinations",
            "add",
            "vault-canary",
            "--provider",
            "s3",
            "--config",
            str(config),
            check=False,
        )
        bad = json.loads(config.read_text()) | {"nonsense": canary}
        config.write_text(json.dumps(bad))
        seen.cli(
            "destinations", "add", "other", "--provider", "s3", "--config", str(config), check=False
        )
        config.unlink()

        rec = seen.json("recordings", "start", "--destination", "vault-canary")
        rid = str(rec["recording_id"])
        ca = Path(system.endpoints["ca_file"])
        asyncio.run(
            publish(
                str(rec["whip_url"]),
                str(rec["token"]),
                participant="alice",
                seconds=SECONDS,
                ca_file=ca,
            )
        )
        seen.cli("recordings", "stop", rid)
        final = system.wait_state(rid, {"uploaded", "retained", "failed"})
        assert final["state"] == "uploaded", (final, system.logs()[-4000:])
        for args in (
            ("recordings", "show", rid),
            ("recordings", "list"),
            ("destinations", "list"),
            ("destinations", "show", "vault-canary"),
            ("destinations", "test", "vault-canary"),
            ("keys", "show"),
            ("keys", "rotate"),
            ("keys", "rewrap"),  # against the embedded PostgreSQL the system runs
            ("destinations", "test", "vault-canary"),  # the vault re-read the rotated keys
        ):
            seen.json(*args)
        secret_config = {
            "bucket": "canary-bucket",
            "endpoint_url": s3_server.url,
            "access_key_id": s3_server.access_key,
            "secret_access_key": canary,
        }
        for method, path, body in (
            ("GET", "/v1/destinations", None),
            ("GET", "/v1/destinations/vault-canary", None),
            ("GET", f"/v1/recordings/{rid}", None),
            ("POST", "/v1/destinations/vault-canary/test", None),
            (
                "POST",
                "/v1/destinations",
                {"name": "vault-canary", "provider": "s3", "config": secret_config},
            ),  # 409
            (
                "POST",
                "/v1/destinations",
                {
                    "name": "x",
                    "provider": "s3",
                    "config": secret_config | {"bucket": "nope-bucket"},
                },
            ),
        ):
            seen.texts.append(raw_api(system, method, path, body))
        assert seen.texts[-2].startswith("409 ") and seen.texts[-1].startswith("422 ")
        needle = canary.encode()

        # 1. Every file under the data dir: logs, JetStream's store, PostgreSQL's files.
        files = files_under(system.data_dir)
        logs = [p for p in files if p.suffix == ".log" or "log" in p.parent.name]
        assert len(logs) >= 5, logs
        assert any(rid.encode() in p.read_bytes() for p in logs)  # the scan reads real logs
        leaks = [p for p in files if needle in p.read_bytes()]
        assert leaks == [], leaks
        assert needle not in Path(system.log_path).read_bytes()

        # 2. Every message of every stream.
        count, blob = asyncio.run(all_stream_messages(system.endpoints["nats_url"]))
        assert count > 10 and rid.encode() in blob and b"vault.grant_issued" in blob
        assert needle not in blob

        # 3. Every table of every schema (the URL the services use).
        api_env = environ_of(system.pid("api"))
        n_tables, text, raw = asyncio.run(dump_database(api_env["RESGUARDO_DATABASE_URL"]))
        assert n_tables > 20 and "vault-canary" in text and rid in text
        assert canary not in text and needle not in raw

        # 4. No process's argv or environment.
        pids = processes_of(system)
        assert len(pids) >= 7, pids
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
            assert needle not in cmdline and needle not in environ, pid
        assert "RESGUARDO_DATA_DIR" in api_env

        # 5. No API response, no CLI output.
        assert len(seen.texts) >= 20
        assert any("vault-canary" in t for t in seen.texts)
        for text_out in seen.texts:
            assert canary not in text_out
        assert os.environ.get("RESGUARDO_NATS_PASSWORD") is None  # tests never had one
    finally:
        stop_system(system)
