"""`resguardo users ...` as a user runs it (subprocesses) against the real API: add (with a
password from stdin, or printing a one-time link), list, set-role, remove and link; the admin
token for other tenants and operators; one-sentence errors; no password ever printed."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from tests.api.auth_support import Browser
from tests.api.support import ApiProcess, db_fetch, dev_tenant_id

from .test_cli import cli_env, ok_json, one_sentence_error, run

_LINK = re.compile(r"https://127\.0\.0\.1:\d+/signin/link/[A-Za-z0-9_-]{43}")


async def test_add_list_set_role_remove(api: ApiProcess, tmp_path: Path, database_url: str) -> None:
    env = cli_env(api, tmp_path, RESGUARDO_ADMIN_TOKEN=api.admin_token)
    password = "CANARY-" + secrets.token_hex(12)
    added = run(env, "users", "add", "ana@example.com", "--role", "owner", "--password-stdin",
                stdin=password + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "Added ana@example.com (usr_" in added.stdout
    assert f"owner of {await dev_tenant_id(database_url)}" in added.stdout
    assert "link" not in added.stdout.lower()
    assert password not in added.stdout + added.stderr
    page = await Browser(api).sign_in("ana@example.com", password)
    assert page.status == 303  # the password from stdin is the one that works

    linked = run(env, "users", "add", "ben@example.com", "--role", "member")
    assert linked.returncode == 0, linked.stderr
    links = _LINK.findall(linked.stdout)
    assert len(links) == 1 and "works once" in linked.stdout and "not shown again" in linked.stdout
    path = links[0].split(str(api.port), 1)[1]
    assert (await Browser(api).request("GET", path)).status == 200

    other_tenant, _ = await api.create_tenant("other")
    other = ok_json(env, "users", "add", "cy@other.example", "--role", "admin",
                    "--tenant", other_tenant)  # fmt: skip
    assert other["user"]["tenant_id"] == other_tenant and other["signin_link"].startswith("https")
    ops = ok_json(env, "users", "add", "ops@resguardo.example", "--role", "operator")
    assert ops["user"]["tenant_id"] is None

    mine = ok_json(env, "users", "list")
    assert [u["email"] for u in mine] == ["ana@example.com", "ben@example.com"]
    assert all("password_hash" not in u for u in mine)
    table = run(env, "users", "list")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "ID", "EMAIL", "ROLE", "TENANT", "PASSWORD", "CREATED",
    ]  # fmt: skip
    assert "ana@example.com" in table.stdout and "yes" in table.stdout
    every = ok_json(env, "users", "list", "--all")
    assert len(every) == 4
    theirs = ok_json(env, "users", "list", "--tenant", other_tenant)
    assert [u["email"] for u in theirs] == ["cy@other.example"]

    changed = run(env, "users", "set-role", "BEN@example.com", "admin")
    assert changed.returncode == 0, changed.stderr
    assert "ben@example.com" in changed.stdout and "admin of" in changed.stdout
    ben_id = next(u["user_id"] for u in ok_json(env, "users", "list") if u["role"] == "admin")
    new_link = run(env, "users", "link", ben_id)
    assert new_link.returncode == 0 and len(_LINK.findall(new_link.stdout)) == 1
    removed = run(env, "users", "remove", ben_id)
    assert removed.returncode == 0 and f"({ben_id})" in removed.stdout, removed.stderr
    assert [u["email"] for u in ok_json(env, "users", "list")] == ["ana@example.com"]
    gone = run(env, "users", "remove", "ops@resguardo.example", "--admin")
    assert gone.returncode == 0, gone.stderr
    ops_role = run(env, "users", "set-role", "cy@other.example", "member", "--admin", "--json")
    assert json.loads(ops_role.stdout)["user"]["role"] == "member"

    dump = str([dict(r) for r in await db_fetch(database_url, "SELECT * FROM api.users")])
    assert password not in dump and password not in api.log_text()


async def test_one_sentence_errors(api: ApiProcess, tmp_path: Path) -> None:
    env = cli_env(api, tmp_path)
    line = one_sentence_error(run(env, "users", "add", "x@example.com", "--role", "boss"))
    assert "role must be one of owner, admin, member, operator" in line
    line = one_sentence_error(run(env, "users", "add", "not-an-email", "--role", "member"))
    assert "email" in line
    line = one_sentence_error(
        run(env, "users", "add", "x@example.com", "--role", "member", "--password-stdin", stdin="")
    )
    assert "No password on standard input" in line
    short = "tiny-pw"
    proc = run(env, "users", "add", "x@example.com", "--role", "member", "--password-stdin",
               stdin=short)  # fmt: skip
    line = one_sentence_error(proc)
    assert "at least 12 characters" in line and short not in line
    line = one_sentence_error(run(env, "users", "remove", "nobody@example.com"))
    assert "No user" in line
    line = one_sentence_error(run(env, "users", "set-role", "../x", "member"))
    assert "neither a user id" in line
    # The tenant's token may not add operators; the admin token's file is not there.
    line = one_sentence_error(run(env, "users", "add", "o@example.com", "--role", "operator"))
    assert "admin token" in line
