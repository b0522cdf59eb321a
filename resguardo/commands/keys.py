"""``resguardo keys show|rotate|rewrap|retire``: the operator's keys.

- ``show``: the manifest-signing public key (verify ``manifest.json.sig`` with it) and the master
  key versions (numbers only).
- ``rotate``: add a master key version; new destinations' data keys are wrapped under it at once.
- ``rewrap``: re-wrap every data key under the newest version. Only data keys are unwrapped,
  never a credential: no plaintext secret exists at any point. Progress on stderr; ``--json``.
- ``retire VERSION``: remove an old version; refused while any data key still uses it.

These run locally, on the vault's host, as an offline admin tool against the master key file and
the database, not as an RPC to the vault: key management should need access to the host that
holds the keys, not just an API token or a NATS login. The running vault notices the changed key
file by itself. The reasons and the guarantees (compare-and-swap per row, never the newest
version retired) are in ``services/credentials/admin.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import ConfigError

from ..cli import CliError
from ..client import print_json
from ..progress import Progress

if TYPE_CHECKING:  # the admin module is imported when a command runs (a quick CLI start)
    from services.credentials.admin import TableRewrap


def _config() -> Any:
    from services.credentials import admin

    try:
        return admin.load_config()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _signing(config: Any) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization

    from shared import signing

    override = os.environ.get("RESGUARDO_SIGNING_KEY_FILE") or None
    path = signing.key_path(config.data_dir, Path(override).expanduser() if override else None)
    try:
        private = signing.load_or_create(path)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not an Ed25519 key"
        raise CliError(
            f"Cannot read the signing key {path} ({reason}); run this as the system's user."
        ) from None
    public = private.public_key()
    del private
    return {
        "algorithm": "Ed25519",
        "key_id": signing.key_id(public),
        "public_key_pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "key_file": str(path),
    }


def _show(args: argparse.Namespace) -> int:
    from services.credentials import admin

    config = _config()
    sign = _signing(config)
    source = admin.source_of(config)
    master: dict[str, Any] | None = None
    if source.from_env or source.key_file.exists():
        try:
            keys = source.load()
        except (admin.KeyAdminError, ConfigError) as exc:
            raise CliError(str(exc)) from None
        master = {"source": source.where, "versions": sorted(keys.keys), "newest": keys.newest}
    if args.json:
        print_json({"signing": sign, "master_keys": master})
        return 0
    print(f"Manifest signing key  Ed25519, key id {sign['key_id']}")
    print(f"  private key         {sign['key_file']} (stays on this host)")
    print(sign["public_key_pem"].rstrip())
    if master is None:
        print(f"Master keys           none yet (the vault makes {source.key_file} on first start)")
    else:
        versions = ", ".join(map(str, master["versions"]))
        print(f"Master keys           versions {versions} (newest {master['newest']})")
        print(f"  from                {master['source']}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from services.credentials import admin

    config = _config()
    try:
        result = admin.rotate(admin.source_of(config))
    except (admin.KeyAdminError, ConfigError) as exc:
        raise CliError(str(exc)) from None
    _audit(_running_database(config), "master_key_rotated", f"version {result.new_version} added")
    if args.json:
        print_json(
            {
                "new_version": result.new_version,
                "versions": result.versions,
                "key_file": result.key_file,
            }
        )
        return 0
    print(
        f"Added master key version {result.new_version} to {result.key_file} "
        f"(versions {', '.join(map(str, result.versions))})."
    )
    print("New destinations use it now; run `resguardo keys rewrap` to move the existing ones.")
    print("Back up the key file: without it, nothing wrapped under its keys can be decrypted.")
    return 0


def _audit(url: str | None, action: str, detail: str) -> None:
    """An entry in the API's audit trail (``api.audit_log``), when the API's schema is in this
    database (``resguardo up`` runs one for the whole system). Best effort: the keys are changed
    already, so a missing schema or database only says so."""
    from services.api.audit_local import record_local

    try:
        actor = f"resguardo keys ({getpass.getuser()})"
    except (KeyError, OSError):
        actor = f"resguardo keys (uid {os.getuid()})"
    if url is None or not asyncio.run(record_local(url, actor=actor, action=action, detail=detail)):
        print("(not in the API's audit trail: its database was not reachable)", file=sys.stderr)


def _running_database(config: Any) -> str | None:
    """The configured database, or the embedded one if it is running (never started for this)."""
    if config.database_url:
        return str(config.database_url)
    from shared.embedded import Postgres

    pgdata = (config.data_dir / "postgres").resolve()
    return Postgres.running_url(pgdata) if pgdata.is_dir() else None


async def _with_pool(url: str, work: Any) -> Any:
    import asyncpg

    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(
            f"Cannot reach the vault's database ({type(exc).__name__}); check "
            "RESGUARDO_DATABASE_URL, or that the data dir's embedded PostgreSQL can start."
        ) from None
    assert pool is not None
    try:
        return await work(pool)
    finally:
        await pool.close()


def _rewrap(args: argparse.Namespace) -> int:
    from services.credentials import admin

    config = _config()
    try:
        keys = admin.source_of(config).load()
    except (admin.KeyAdminError, ConfigError) as exc:
        raise CliError(str(exc)) from None
    bar: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress("rewrap", total, unit="keys"))
        bar[0].advance(done - bar[0].done)

    try:
        with admin.database_url(config) as url:
            result: admin.RewrapResult = asyncio.run(
                _with_pool(url, lambda pool: admin.rewrap(pool, keys, on_progress=progress))
            )
            _audit(
                url,
                "master_keys_rewrapped",
                f"{result.destinations.rewrapped} data keys, {result.recordings.rewrapped} "
                f"recording keys and {result.webhook_secrets.rewrapped} webhook secrets under "
                "version "
                f"{result.newest_version}",
            )
    except admin.KeyAdminError as exc:
        raise CliError(str(exc)) from None
    if bar:
        bar[0].finish(f"{result.destinations.rewrapped} rewrapped")
    d = result.destinations
    out = {
        "newest_version": result.newest_version,
        **_table_json(d),
        "changed_meanwhile": result.changed_meanwhile,
        "unknown_version": {str(v): n for v, n in sorted(result.unknown_version.items())},
        "recordings": _table_json(result.recordings),
        "webhook_secrets": _table_json(result.webhook_secrets),
        "ok": result.ok,
    }
    if args.json:
        print_json(out)
        return 0 if result.ok else 1
    print(
        f"Rewrapped {d.rewrapped} data key(s) under master key version {result.newest_version}"
        + (
            f" ({result.changed_meanwhile} changed meanwhile, left as they are)."
            if result.changed_meanwhile
            else "."
        )
    )
    print(f"Data keys per version now: {_per_version(d)}.")
    for label, table in (
        ("Recording keys", result.recordings),
        ("Webhook secrets", result.webhook_secrets),
    ):
        print(f"{label}: {table.rewrapped} rewrapped; per version now: {_per_version(table)}.")
    if result.unknown_version:
        missing = ", ".join(map(str, sorted(result.unknown_version)))
        raise CliError(
            f"Some data keys are wrapped under master key version(s) {missing}, which are not "
            "configured; put those keys back, then run `resguardo keys rewrap` again."
        )
    for table, what, remedy in (
        (d, "data key(s)", "restore that row from a backup or re-create it."),
        (
            result.recordings,
            "recording key(s)",
            "restore that row from a backup: without it that recording's backup cannot be read.",
        ),
        (
            result.webhook_secrets,
            "webhook secret(s)",
            "rotate that endpoint's secret (`resguardo webhooks rotate-secret`).",
        ),
    ):
        if table.failed:
            raise CliError(
                f"{len(table.failed)} {what} failed authentication and were left as they are "
                f"(first: {table.failed[0]}); {remedy}"
            )
    return 0


def _table_json(table: TableRewrap) -> dict[str, object]:
    return {
        "to_rewrap": table.to_rewrap,
        "rewrapped": table.rewrapped,
        "failed": table.failed,
        "by_version": {str(v): n for v, n in sorted(table.by_version.items())},
    }


def _per_version(table: TableRewrap) -> str:
    return ", ".join(f"v{v}: {n}" for v, n in sorted(table.by_version.items())) or "none"


def _retire(args: argparse.Namespace) -> int:
    from services.credentials import admin

    config = _config()
    source = admin.source_of(config)
    try:
        with admin.database_url(config) as url:
            result: admin.RetireResult = asyncio.run(
                _with_pool(url, lambda pool: admin.retire(pool, source, args.version))
            )
            _audit(url, "master_key_retired", f"version {result.retired} removed")
    except (admin.KeyAdminError, ConfigError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json({"retired": result.retired, "versions": result.versions})
        return 0
    print(
        f"Retired master key version {result.retired}; the key file now holds version(s) "
        f"{', '.join(map(str, result.versions))}. Backups taken before the last rewrap can no "
        "longer be decrypted with it."
    )
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "keys",
        help="the signing key and the vault's master keys (run on the vault's host)",
        description="Show the manifest-signing public key; rotate, rewrap and retire the "
        "vault's master keys. Runs locally against the key file and the database.",
    )
    ksub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    p = ksub.add_parser("show", help="the signing public key and the master key versions")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_show)

    p = ksub.add_parser("rotate", help="add a new master key version (wraps new data keys)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_rotate)

    p = ksub.add_parser(
        "rewrap", help="re-wrap every data key under the newest master key (no secret is opened)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_rewrap)

    p = ksub.add_parser("retire", help="remove an old master key version no data key uses")
    p.add_argument("version", type=int, metavar="VERSION")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_retire)
