"""Users through the API against the real API process and PostgreSQL: add, list, remove and
set-role (who may do which, errors naming the field), one-time sign-in links (once only,
expiring), argon2id hashes, and no password or link token anywhere in the database or the log."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher

from services.api.auth.links import link_hash
from services.api.auth.sessions import COOKIE

from .auth_support import Browser, add_user, signed_in
from .support import ApiProcess, db_fetch, dev_tenant_id

PASSWORD = "correct horse battery staple"
_LINK = re.compile(r"^https://127\.0\.0\.1:\d+/signin/link/([A-Za-z0-9_-]{43})$")


async def _dump_database(database_url: str) -> str:
    """Every row of every table of the API's schema, as text."""
    tables = await db_fetch(
        database_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'api'",
    )
    out = []
    for t in tables:
        rows = await db_fetch(database_url, f'SELECT * FROM api."{t["table_name"]}"')
        out.append(str([dict(r) for r in rows]))
    return "\n".join(out)


def _token(link: str) -> str:
    match = _LINK.match(link)
    assert match, link
    return match.group(1)


async def test_add_list_set_role_remove(api: ApiProcess, database_url: str) -> None:
    tenant_id = await dev_tenant_id(database_url)
    added = await add_user(api, "Ana@Example.com", "owner")
    user = added["user"]
    assert re.fullmatch(r"usr_[0-9a-f]{16}", user["user_id"])
    assert user["email"] == "Ana@Example.com" and user["role"] == "owner"
    assert user["tenant_id"] == tenant_id and user["has_password"] is False
    assert user["disabled"] is False
    assert "password" not in str(added).replace("has_password", "")
    expires = datetime.fromisoformat(added["expires_at"])
    expected = datetime.now(UTC) + timedelta(seconds=86400)  # RESGUARDO_SIGNIN_LINK_TTL_S
    assert abs((expires - expected).total_seconds()) < 120
    _token(added["signin_link"])

    member = (await add_user(api, "ben@example.com", "member", password=PASSWORD))["user"]
    assert member["has_password"] is True
    operator = await add_user(api, "ops@resguardo.example", "operator", token="admin")
    assert operator["user"]["tenant_id"] is None and "signin_link" in operator
    other_tenant, other_token = await api.create_tenant("other")
    await add_user(api, "cy@other.example", "admin", token=other_token)

    listed = await api.request("GET", "/v1/users")
    assert listed.status == 200, listed.text
    assert [u["email"] for u in listed.body["users"]] == ["Ana@Example.com", "ben@example.com"]
    every = await api.request("GET", "/v1/users", token="admin")
    assert sorted(u["email"] for u in every.body["users"]) == [
        "Ana@Example.com",
        "ben@example.com",
        "cy@other.example",
        "ops@resguardo.example",
    ]
    one = await api.request("GET", f"/v1/users?tenant_id={other_tenant}", token="admin")
    assert [u["email"] for u in one.body["users"]] == ["cy@other.example"]

    r = await api.request("PATCH", f"/v1/users/{member['user_id']}", json={"role": "admin"})
    assert r.status == 200 and r.body["user"]["role"] == "admin", r.text
    # By email too, case-insensitively.
    r = await api.request("PATCH", "/v1/users/BEN@example.com", json={"role": "member"})
    assert r.status == 200 and r.body["user"]["role"] == "member", r.text
    # Another tenant's users are not found, whoever asks from a tenant.
    r = await api.request("PATCH", f"/v1/users/{member['user_id']}", token=other_token,
                          json={"role": "owner"})  # fmt: skip
    assert r.status == 404 and r.error["field"] == "user_id"
    r = await api.request("DELETE", "/v1/users/ben@example.com", token=other_token)
    assert r.status == 404

    r = await api.request("DELETE", f"/v1/users/{member['user_id']}")
    assert r.status == 200 and r.body["user"]["email"] == "ben@example.com"
    r = await api.request("DELETE", f"/v1/users/{member['user_id']}")
    assert r.status == 404 and r.error["field"] == "user_id"
    r = await api.request("DELETE", "/v1/users/ops@resguardo.example", token="admin")
    assert r.status == 200

    audit = await db_fetch(
        database_url,
        "SELECT tenant_id, actor, action, target, detail FROM api.audit_log ORDER BY id",
    )
    actions = [(a["actor"], a["action"], a["target"]) for a in audit]
    assert ("tenant token", "user_added", "Ana@Example.com") in actions
    assert ("admin token", "user_added", "ops@resguardo.example") in actions
    assert ("tenant token", "user_role_changed", "ben@example.com") in actions
    assert ("tenant token", "user_removed", "ben@example.com") in actions
    assert ("admin token", "user_removed", "ops@resguardo.example") in actions
    changed = [a for a in audit if a["action"] == "user_role_changed"]
    assert changed[0]["detail"].endswith("member -> admin")
    assert changed[0]["tenant_id"] == tenant_id
    assert PASSWORD not in str([dict(a) for a in audit])


async def test_bad_input_is_refused_naming_the_field(api: ApiProcess) -> None:
    tenant_id, _ = await api.create_tenant("acme")
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("dev", {"email": "not-an-email", "role": "member"}, 422, "email"),
        ("dev", {"email": "a b@example.com", "role": "member"}, 422, "email"),
        ("dev", {"email": "x@example.com", "role": "boss"}, 422, "role"),
        ("dev", {"email": "x@example.com"}, 422, "role"),
        ("dev", {"role": "member"}, 422, "email"),
        ("dev", {"email": "x@example.com", "role": "member", "colour": "red"}, 422, "colour"),
        ("dev", {"email": "x@example.com", "role": "member", "password": "short"}, 422, "password"),
        ("dev", {"email": "x@example.com", "role": "operator"}, 403, "role"),
        ("dev", {"email": "x@example.com", "role": "member", "tenant_id": tenant_id}, 403,
         "tenant_id"),
        ("admin", {"email": "x@example.com", "role": "member"}, 422, "tenant_id"),
        ("admin", {"email": "x@example.com", "role": "operator", "tenant_id": tenant_id}, 422,
         "tenant_id"),
        ("admin", {"email": "x@example.com", "role": "member", "tenant_id": "ten_x"}, 422,
         "tenant_id"),
        ("admin", {"email": "x@example.com", "role": "member",
                   "tenant_id": "ten_0000000000000000"}, 404, "tenant_id"),
    ]  # fmt: skip
    for token, body, status, field in cases:
        r = await api.request("POST", "/v1/users", token=token, json=body)
        assert r.status == status and r.error["field"] == field, (body, r.text)
        assert r.error["message"].endswith((".", ")")), r.text
        assert "short" not in r.text  # a password is never echoed
    await add_user(api, "dup@example.com", "member")
    r = await api.request("POST", "/v1/users", json={"email": "DUP@example.com", "role": "admin"})
    assert r.status == 409 and r.error["field"] == "email"
    r = await api.request(
        "POST", "/v1/users", token="admin",
        json={"email": "Dup@Example.com", "role": "owner", "tenant_id": tenant_id},
    )  # fmt: skip
    assert r.status == 409  # emails are unique across tenants
    r = await api.request("PATCH", "/v1/users/dup@example.com", json={"role": "operator"})
    assert r.status == 422 and r.error["field"] == "role"
    r = await api.request("PATCH", "/v1/users/dup@example.com", json={"role": "nope"})
    assert r.status == 422 and r.error["field"] == "role"
    r = await api.request("PATCH", "/v1/users/..%2Fetc", json={"role": "member"})
    assert r.status == 400 and r.error["field"] == "user_id"
    r = await api.request("GET", "/v1/users?tenant_id=" + tenant_id)
    assert r.status == 403 and r.error["field"] == "tenant_id"


async def test_only_owners_and_tokens_touch_owners(api: ApiProcess) -> None:
    owner = await add_user(api, "own@example.com", "owner", password=PASSWORD)
    admin = await signed_in(api, "adm@example.com", "admin", PASSWORD)
    r = await admin.request("POST", "/v1/users", json={"email": "o2@example.com", "role": "owner"})
    assert r.status == 403 and r.error["field"] == "role", r.text
    owner_id = owner["user"]["user_id"]
    for method, path, body in (
        ("PATCH", f"/v1/users/{owner_id}", {"role": "member"}),
        ("DELETE", f"/v1/users/{owner_id}", None),
        ("POST", f"/v1/users/{owner_id}/signin-link", {}),
    ):
        r = await admin.request(method, path, json=body)
        assert r.status == 403, (method, path, r.text)
    r = await admin.request("POST", "/v1/users", json={"email": "m@example.com", "role": "member"})
    assert r.status == 201, r.text
    assert r.body["user"]["tenant_id"] == owner["user"]["tenant_id"]
    r = await admin.request("PATCH", "/v1/users/m@example.com", json={"role": "owner"})
    assert r.status == 403
    r = await admin.request("PATCH", "/v1/users/m@example.com", json={"role": "admin"})
    assert r.status == 200
    boss = await signed_in(api, "boss@example.com", "owner", PASSWORD)
    r = await boss.request("PATCH", "/v1/users/m@example.com", json={"role": "owner"})
    assert r.status == 200, r.text
    # The actor in the audit trail is the signed-in user.
    r = await boss.request("DELETE", "/v1/users/m@example.com")
    assert r.status == 200


async def test_a_sign_in_link_works_once_and_signs_in(api: ApiProcess, database_url: str) -> None:
    added = await add_user(api, "link@example.com", "member")
    link = added["signin_link"]
    token = _token(link)
    path = link.split(str(api.port), 1)[1]
    browser = Browser(api)
    page = await browser.request("GET", path)
    assert page.status == 200, page.text
    assert "link@example.com" in page.text
    assert 'autocomplete="new-password"' in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    csrf = page.form_token()
    # Too short, or two different passwords: the form again, the link still good.
    for password, confirm, message in (
        ("short", "short", "at least 12 characters"),
        (PASSWORD, PASSWORD + "!", "passwords differ"),
    ):
        page = await browser.request(
            "POST", path, form={"password": password, "confirm": confirm, "csrf_token": csrf}
        )
        assert page.status == 422 and message in page.text and 'role="alert"' in page.text
    page = await browser.request(
        "POST", path, form={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf}
    )
    assert page.status == 303, page.text
    assert page.location == "/ui/recordings"
    assert page.cookie(COOKIE)["httponly"]
    r = await browser.request("GET", "/v1/recordings")
    assert r.status == 200, r.text

    # Once only: the page says so, and a second POST (say, a replay) changes nothing.
    again = Browser(api)
    page = await again.request("GET", path)
    assert page.status == 410 and "used already" in page.text and 'role="alert"' in page.text
    page = await again.request(
        "POST", path, form={"password": "another password here", "confirm": "another password here",
                            "csrf_token": "no form to take it from"},
    )  # fmt: skip
    assert page.status == 410 and not again.session
    assert (await Browser(api).sign_in("link@example.com", "another password here")).status == 401
    assert (await Browser(api).sign_in("link@example.com", PASSWORD)).status == 303

    stored = await db_fetch(database_url, "SELECT link_sha256, used_at FROM api.signin_links")
    assert [r["link_sha256"] for r in stored] == [link_hash(token)]
    assert stored[0]["used_at"] is not None
    # A token nobody issued, and one that is not even a token.
    assert (await Browser(api).request("GET", "/signin/link/" + "A" * 43)).status == 404
    assert (await Browser(api).request("GET", "/signin/link/nope")).status == 404
    actions = [
        r["action"]
        for r in await db_fetch(
            database_url,
            "SELECT action FROM api.audit_log WHERE actor = 'link@example.com' ORDER BY id",
        )
    ]
    assert actions[:2] == ["password_set", "sign_in"]


async def test_a_sign_in_link_expires_and_a_new_one_can_be_sent(
    api: ApiProcess, database_url: str
) -> None:
    added = await add_user(api, "late@example.com", "admin")
    path = "/signin/link/" + _token(added["signin_link"])
    await db_fetch(
        database_url, "UPDATE api.signin_links SET expires_at = now() - interval '1 second'"
    )
    browser = Browser(api)
    page = await browser.request("GET", path)
    assert page.status == 410 and "has expired" in page.text
    page = await browser.request(
        "POST", path, form={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": "x"}
    )
    assert page.status == 410 and not browser.session

    r = await api.request("POST", "/v1/users/late@example.com/signin-link", json={})
    assert r.status == 201, r.text
    fresh = "/signin/link/" + _token(r.body["signin_link"])
    page = await browser.request("GET", fresh)
    assert page.status == 200
    page = await browser.request(
        "POST", fresh, form={"password": PASSWORD, "confirm": PASSWORD,
                             "csrf_token": page.form_token()},
    )  # fmt: skip
    assert page.status == 303 and browser.session
    # A new password through a link ends the user's other sessions.
    elsewhere = Browser(api)
    assert (await elsewhere.sign_in("late@example.com", PASSWORD)).status == 303
    r = await api.request("POST", "/v1/users/late@example.com/signin-link", json={})
    reset = "/signin/link/" + _token(r.body["signin_link"])
    third = Browser(api)
    page = await third.request("GET", reset)
    new_password = "a completely different one"
    page = await third.request(
        "POST", reset, form={"password": new_password, "confirm": new_password,
                             "csrf_token": page.form_token()},
    )  # fmt: skip
    assert page.status == 303
    assert (await elsewhere.request("GET", "/v1/users")).status == 401
    assert (await browser.request("GET", "/v1/users")).status == 401
    assert (await third.request("GET", "/v1/users")).status == 200


async def test_passwords_are_argon2id_and_nowhere_else(api: ApiProcess, database_url: str) -> None:
    canary = "CANARY-" + secrets.token_hex(12)
    await add_user(api, "can@example.com", "owner", password=canary)
    linked = await add_user(api, "canlink@example.com", "member")
    link_token = _token(linked["signin_link"])
    path = "/signin/link/" + link_token
    canary2 = "CANARY2-" + secrets.token_hex(12)
    browser = Browser(api)
    page = await browser.request("GET", path)
    page = await browser.request(
        "POST", path, form={"password": canary2, "confirm": canary2,
                            "csrf_token": page.form_token()},
    )  # fmt: skip
    assert page.status == 303
    # Sign in with each, fail once with a third canary as the password.
    assert (await Browser(api).sign_in("can@example.com", canary)).status == 303
    canary3 = "CANARY3-" + secrets.token_hex(12)
    assert (await Browser(api).sign_in("can@example.com", canary3)).status == 401
    # A password typed into the email field is recorded as the actor of a failed sign-in:
    # that is the email typed, so keep it out of the canaries.

    rows = await db_fetch(database_url, "SELECT email, password_hash FROM api.users ORDER BY email")
    hashes = {r["email"]: r["password_hash"] for r in rows}
    hasher = PasswordHasher()
    for email, password in (("can@example.com", canary), ("canlink@example.com", canary2)):
        stored = hashes[email]
        assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), stored
        assert hasher.verify(stored, password)
    dump = await _dump_database(database_url)
    log = api.log_text()
    for secret in (canary, canary2, canary3, link_token):
        assert secret not in dump, secret
        assert secret not in log, secret
    assert "/signin/link/[redacted]" in log  # the access log saw the link, without its token
    answers = (await api.request("GET", "/v1/users")).text
    assert "$argon2" not in answers and canary not in answers
