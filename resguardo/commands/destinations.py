"""``resguardo destinations add|list|show|test|delete``: where recordings are delivered.

Secrets come from a file or stdin (``--config FILE`` or ``--config -``), never from the command
line, where other users and shell histories can read them. ``add`` (unless ``--no-probe``) and
``test`` have an uploader write a small object where recordings go (with a one-shot grant from the
vault, as for an upload), confirm its checksum and delete it, so bad keys, a wrong bucket or
missing permissions show up now, not at the first upload.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import CliError
from ..client import ApiClient, print_json, segment, short_time, table


def _read_config(source: str) -> dict[str, Any]:
    where = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except FileNotFoundError:
        raise CliError(f"The config file {source} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise CliError(f"Cannot read the config from {where} ({reason}).") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        # Position only: the message never quotes the content (it may hold secrets).
        raise CliError(
            f"The config from {where} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "fix it and retry."
        ) from None
    finally:
        del text
    if not isinstance(config, dict):
        raise CliError(f"The config from {where} must be a JSON object of fields; fix it.")
    return config


def _describe(d: dict[str, Any]) -> None:
    print(f"Destination  {d['name']} ({d['destination_id']})")
    print(f"Provider     {d['provider']}")
    for key, value in sorted((d.get("config") or {}).items()):
        print(f"  {key}: {value}")
    secret = d.get("secret_fields") or []
    print(f"Secrets set  {', '.join(secret) if secret else '(none)'}")
    print(f"Fingerprint  {d.get('fingerprint', '')}")
    print(f"Created      {short_time(d.get('created_at'))}")


def _add(args: argparse.Namespace) -> int:
    config = _read_config(args.config)
    body = {"name": args.name, "provider": args.provider, "config": config, "probe": args.probe}
    del config
    client = ApiClient.from_env()
    out = client.request("POST", "/v1/destinations", body)
    del body
    if args.json:
        print_json(out)
    else:
        tested = (
            "tested: a test object was written, confirmed and deleted"
            if args.probe
            else "not tested (--no-probe)"
        )
        print(f"Added destination {out['name']} ({tested}).")
        _describe(out)
    return 0


def _list(args: argparse.Namespace) -> int:
    out = ApiClient.from_env().request("GET", "/v1/destinations")["destinations"]
    if args.json:
        print_json(out)
        return 0
    if not out:
        print("No destinations yet; add one with `resguardo destinations add`.")
        return 0
    rows = [
        [d["name"], d["provider"], d["destination_id"], short_time(d.get("created_at"))]
        for d in out
    ]
    print(table(rows, ["NAME", "PROVIDER", "ID", "CREATED"]))
    return 0


def _show(args: argparse.Namespace) -> int:
    out = ApiClient.from_env().request("GET", f"/v1/destinations/{segment(args.name)}")
    if args.json:
        print_json(out)
    else:
        _describe(out)
    return 0


def _test(args: argparse.Namespace) -> int:
    out = ApiClient.from_env().request("POST", f"/v1/destinations/{segment(args.name)}/test")
    if args.json:
        print_json(out)
        return 0
    probe = out.get("probe") or {}
    print(
        f"Destination {args.name} works: a test object was written to {probe.get('key', '?')}, "
        f"confirmed ({probe.get('checksum_algorithm', '?')} {probe.get('checksum', '?')})"
        + (" and deleted." if probe.get("deleted", True) else ".")
    )
    if not probe.get("deleted", True):
        print("This provider's adapter cannot delete yet: remove the test object yourself.")
    return 0


def _delete(args: argparse.Namespace) -> int:
    out = ApiClient.from_env().request("DELETE", f"/v1/destinations/{segment(args.name)}")
    if args.json:
        print_json(out)
    else:
        print(f"Deleted destination {out['name']}.")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("destinations", help="manage where recordings are delivered")
    dsub = parser.add_subparsers(dest="destinations_command", metavar="ACTION", required=True)

    p = dsub.add_parser(
        "add",
        help="add a destination; its config (with secrets) comes from a file or stdin",
        description="Add a destination. The config is a JSON object of the provider's fields, "
        "read from FILE or, with `--config -`, from standard input: never put secrets on the "
        "command line.",
    )
    p.add_argument("name")
    p.add_argument("--provider", required=True, help="s3, file, ...")
    p.add_argument("--config", required=True, metavar="FILE|-", help="JSON config file, or -")
    p.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="do not test the destination before saving it",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_add)

    p = dsub.add_parser("list", help="your destinations")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = dsub.add_parser("show", help="one destination (never its secrets)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_show)

    p = dsub.add_parser(
        "test",
        help="check a destination now: write, confirm and delete a small test object",
    )
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_test)

    p = dsub.add_parser("delete", help="delete a destination")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_delete)
