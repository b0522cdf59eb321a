"""``resguardo tenants add NAME``: create a tenant and its first API token (admin token)."""

from __future__ import annotations

import argparse
from typing import Any

from ..client import ApiClient, print_json


def _add(args: argparse.Namespace) -> int:
    out = ApiClient.from_env(admin=True).request("POST", "/v1/tenants", {"name": args.name})
    if args.json:
        print_json(out)
        return 0
    print(f"Tenant {out['name']} created ({out['tenant_id']}).")
    print(f"API token: {out['token']}")
    print("The token is shown only once: store it (e.g. as RESGUARDO_API_TOKEN) now.")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("tenants", help="manage tenants (needs the admin token)")
    tsub = parser.add_subparsers(dest="tenants_command", metavar="ACTION", required=True)
    p = tsub.add_parser("add", help="create a tenant; prints its API token once")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_add)
