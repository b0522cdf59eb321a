"""``resguardo users add|list|remove|set-role|link``: the people who sign in to the dashboard.

Roles: ``owner`` and ``admin`` (everything of their tenant), ``member`` (sees recordings, hashes
and the audit trail, can re-send), ``operator`` (our staff: every tenant's health, states, sizes,
usage and audit, re-sends; never a secret, media or participants' names).

Your tenant's API token manages your tenant's users. The admin token (``--tenant ID``, an
``operator`` role, ``--all`` or ``--admin``) manages every tenant's users and the operators.
Without ``--password-stdin``, ``add`` prints a one-time sign-in link that expires (where the
user sets their password); ``link`` prints a new one (a lost link, a forgotten password).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import urllib.parse
from typing import Any

from ..cli import CliError
from ..client import ApiClient, print_json, segment, short_time, table

ROLES = ("owner", "admin", "member", "operator")


def _read_password() -> str:
    if sys.stdin is None:
        raise CliError("--password-stdin needs the password on standard input; pipe it in.")
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CliError("The two passwords differ; run the command again.")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("No password on standard input; pipe one in (one line), or drop the flag.")
    return password


def _print_link(out: dict[str, Any]) -> None:
    print(f"Sign-in link (works once, until {short_time(out.get('expires_at'))} UTC):")
    print(f"  {out['signin_link']}")
    print("Send it to them over a channel you trust; it is not shown again.")


def _describe(user: dict[str, Any]) -> str:
    where = f"of {user['tenant_id']}" if user.get("tenant_id") else "(every tenant)"
    return f"{user['email']} ({user['user_id']}), {user['role']} {where}"


def _add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"email": args.email, "role": args.role}
    if args.tenant:
        body["tenant_id"] = args.tenant
    if args.password_stdin:
        body["password"] = _read_password()
    admin = bool(args.tenant) or args.role == "operator"
    out = ApiClient.from_env(admin=admin).request("POST", "/v1/users", body)
    del body
    if args.json:
        print_json(out)
        return 0
    print(f"Added {_describe(out['user'])}.")
    if out.get("signin_link"):
        _print_link(out)
    return 0


def _list(args: argparse.Namespace) -> int:
    admin = bool(args.tenant) or args.all
    path = "/v1/users"
    if args.tenant:
        path += "?" + urllib.parse.urlencode({"tenant_id": args.tenant})
    found = ApiClient.from_env(admin=admin).request("GET", path)["users"]
    if args.json:
        print_json(found)
        return 0
    if not found:
        print("No users yet; add one with `resguardo users add EMAIL --role ROLE`.")
        return 0
    rows = [
        [
            u["user_id"],
            u["email"],
            u["role"],
            u.get("tenant_id") or "-",
            "yes" if u.get("has_password") else "no",
            short_time(u.get("created_at")),
        ]
        for u in found
    ]
    print(table(rows, ["ID", "EMAIL", "ROLE", "TENANT", "PASSWORD", "CREATED"]))
    return 0


def _remove(args: argparse.Namespace) -> int:
    out = ApiClient.from_env(admin=args.admin).request("DELETE", f"/v1/users/{segment(args.user)}")
    if args.json:
        print_json(out)
    else:
        print(f"Removed {_describe(out['user'])}; their sessions ended.")
    return 0


def _set_role(args: argparse.Namespace) -> int:
    out = ApiClient.from_env(admin=args.admin).request(
        "PATCH", f"/v1/users/{segment(args.user)}", {"role": args.role}
    )
    if args.json:
        print_json(out)
    else:
        print(f"{_describe(out['user'])} now.")
    return 0


def _link(args: argparse.Namespace) -> int:
    path = f"/v1/users/{segment(args.user)}/signin-link"
    out = ApiClient.from_env(admin=args.admin).request("POST", path, {})
    if args.json:
        print_json(out)
        return 0
    print(f"New sign-in link for {_describe(out['user'])}.")
    _print_link(out)
    return 0


def _admin_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin",
        action="store_true",
        help="use the admin token (any tenant's users, and operators)",
    )


def register(sub: Any) -> None:
    parser = sub.add_parser("users", help="manage who signs in to the dashboard, with which role")
    usub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    p = usub.add_parser(
        "add",
        help="add a user; prints a one-time sign-in link unless --password-stdin",
        description="Add a dashboard user. Without --password-stdin a one-time sign-in link is "
        "printed (it expires; the user sets their password through it). With --tenant, or for "
        "an operator, the admin token is used.",
    )
    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--role", required=True, help=f"what the user may do: {', '.join(ROLES)}")
    p.add_argument("--tenant", metavar="ID", help="the user's tenant (needs the admin token)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line) instead of printing a link",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_add)

    p = usub.add_parser("list", help="users (never their passwords)")
    p.add_argument("--tenant", metavar="ID", help="this tenant's users (needs the admin token)")
    p.add_argument(
        "--all", action="store_true", help="every tenant's users and the operators (admin token)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = usub.add_parser("remove", help="remove a user; their sessions end at once")
    p.add_argument("user", metavar="ID|EMAIL")
    _admin_flag(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_remove)

    p = usub.add_parser("set-role", help="change a user's role (applies at once)")
    p.add_argument("user", metavar="ID|EMAIL")
    p.add_argument("role", metavar="ROLE", help=", ".join(ROLES))
    _admin_flag(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_set_role)

    p = usub.add_parser(
        "link",
        help="a new one-time sign-in link for a user (a lost link, a forgotten password)",
    )
    p.add_argument("user", metavar="ID|EMAIL")
    _admin_flag(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_link)
