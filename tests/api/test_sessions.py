"""Dashboard sessions against the real API process and PostgreSQL: the cookie's flags and
lifetime, expiry and idle timeout, CSRF and cross-site refusals, the sign-in rate limit (shared by
every API instance), sign-out, and redirects to the sign-in page."""

from __future__ import annotations

import hashlib
from pathlib import Path

from services.api.auth import passwords
from services.api.auth.sessions import COOKIE, SIGNIN_COOKIE
from services.api.dashboard import CSP
from shared.embedded import NatsServer

from .auth_support import Browser, add_user, signed_in
from .support import ApiProcess, db_fetch, eventually, make_api

PASSWORD = "correct horse battery staple"


async def test_sign_in_sets_a_strict_cookie_and_only_its_hash_is_stored(
    api: ApiProcess, database_url: str
) -> None:
    await add_user(api, "Ana@Example.com", "owner", password=PASSWORD)
    browser = Browser(api)
    form = await browser.request("GET", "/signin?next=/ui/retained")
    assert form.status == 200
    assert form.headers["Content-Security-Policy"] == CSP
    assert form.headers["X-Frame-Options"] == "DENY"
    html = form.text
    for needle in (
        '<label for="email">Email</label>',
        '<label for="password">Password</label>',
        '<button type="submit">Sign in</button>',
        'autocomplete="username"',
        'autocomplete="current-password"',
        'name="next" value="/ui/retained"',
    ):
        assert needle in html, needle
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    pre = form.cookie(SIGNIN_COOKIE)
    assert pre["httponly"] and pre["secure"] and pre["samesite"] == "Strict"
    assert pre["path"] == "/signin"

    page = await browser.request(
        "POST",
        "/signin",
        form={
            "email": "ana@EXAMPLE.com",  # emails compare case-insensitively
            "password": PASSWORD,
            "csrf_token": form.form_token(),
            "next": "/ui/retained",
        },
    )
    assert page.status == 303, page.text
    assert page.location == "/ui/retained"
    assert page.headers["Content-Security-Policy"] == CSP
    cookie = page.cookie(COOKIE)
    assert cookie["httponly"] and cookie["secure"]
    assert cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert cookie["max-age"] == "28800"  # RESGUARDO_SESSION_TTL_S's default
    value = cookie.value
    assert len(value) >= 40

    rows = await db_fetch(database_url, "SELECT * FROM api.sessions")
    assert [r["session_sha256"] for r in rows] == [hashlib.sha256(value.encode()).hexdigest()]
    dump = str([dict(r) for r in rows])
    assert value not in dump
    assert value not in api.log_text()

    # The session works on the API, with the user's role.
    r = await browser.request("GET", "/v1/users")
    assert r.status == 200, r.text
    assert [u["email"] for u in r.body["users"]] == ["Ana@Example.com"]
    # Signed in already: the sign-in page sends the browser on.
    again = await browser.request("GET", "/signin?next=/ui/destinations")
    assert again.status == 303 and again.location == "/ui/destinations"


async def test_next_only_goes_to_our_own_paths(api: ApiProcess) -> None:
    await add_user(api, "nex@example.com", "member", password=PASSWORD)
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "/signout"):
        browser = Browser(api)
        page = await browser.sign_in("nex@example.com", PASSWORD, next_path=bad)
        assert page.status == 303
        assert page.location == "/ui/recordings", (bad, page.location)


async def test_pages_without_a_session_go_to_the_sign_in_page(api: ApiProcess) -> None:
    browser = Browser(api)
    page = await browser.request("GET", "/ui/retained?state=retained")
    assert page.status == 303
    assert page.location == "/signin?next=%2Fui%2Fretained%3Fstate%3Dretained"
    assert page.headers["Content-Security-Policy"] == CSP
    page = await browser.request("GET", "/ui/recordings")
    assert page.status == 303 and page.location.startswith("/signin")
    page = await browser.request("POST", "/signout", form={})
    assert page.status == 303 and page.location == "/signin"
    # The API answers 401 (no redirect); health stays public; so do the dashboard's assets.
    r = await browser.request("GET", "/v1/recordings")
    assert r.status == 401 and r.error["field"] == "authorization"
    assert (await browser.request("GET", "/healthz")).status == 200
    asset = await browser.request("GET", "/ui/static/none-such.css")
    assert asset.status != 303 and asset.status != 401


async def test_expiry_idle_timeout_and_a_changed_or_removed_user(
    api: ApiProcess, database_url: str
) -> None:
    browser = await signed_in(api, "exp@example.com", "admin", PASSWORD)
    assert (await browser.request("GET", "/v1/users")).status == 200
    digest = hashlib.sha256(browser.session.encode()).hexdigest()
    await db_fetch(
        database_url,
        "UPDATE api.sessions SET expires_at = now() - interval '1 second' "
        "WHERE session_sha256 = $1",
        digest,
    )
    r = await browser.request("GET", "/v1/users")
    assert r.status == 401 and "session has ended" in r.error["message"]
    page = await browser.request("GET", "/ui/recordings")
    assert page.status == 303 and page.location.startswith("/signin")
    assert page.cookie(COOKIE)["max-age"] == "0"  # the stale cookie is cleared

    idle = await signed_in(api, "idle@example.com", "member", PASSWORD)
    assert (await idle.request("GET", "/v1/recordings")).status == 200
    await db_fetch(
        database_url,
        "UPDATE api.sessions SET last_seen_at = now() - interval '61 minutes' "
        "WHERE session_sha256 = $1",
        hashlib.sha256(idle.session.encode()).hexdigest(),
    )
    assert (await idle.request("GET", "/v1/recordings")).status == 401

    # A role change applies to a live session at once; a removed user's sessions end.
    member = await signed_in(api, "mem@example.com", "member", PASSWORD)
    r = await member.request("GET", "/v1/users")
    assert r.status == 403 and r.error["message"] == "Your role (member) may not manage users."
    user_id = next(
        u["user_id"]
        for u in (await api.request("GET", "/v1/users")).body["users"]
        if u["email"] == "mem@example.com"
    )
    r = await api.request("PATCH", f"/v1/users/{user_id}", json={"role": "admin"})
    assert r.status == 200, r.text
    assert (await member.request("GET", "/v1/users")).status == 200
    assert (await api.request("DELETE", f"/v1/users/{user_id}")).status == 200
    assert (await member.request("GET", "/v1/users")).status == 401
    assert await db_fetch(database_url, "SELECT 1 FROM api.sessions s JOIN api.users u "
                          "USING (user_id) WHERE u.email = 'mem@example.com'") == []  # fmt: skip


async def test_the_session_ttl_setting_is_the_cookie_and_the_session_lifetime(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> None:
    short = make_api(tmp_path, nats_server.url, database_url, name="short", session_ttl_s="2")
    short.start()
    try:
        await short.ready()
        await add_user(short, "ttl@example.com", "member", password=PASSWORD)
        browser = Browser(short)
        page = await browser.sign_in("ttl@example.com", PASSWORD)
        assert page.status == 303 and page.cookie(COOKIE)["max-age"] == "2"
        assert (await browser.request("GET", "/v1/recordings")).status == 200

        async def ended() -> bool:
            return (await browser.request("GET", "/v1/recordings")).status == 401

        await eventually(ended, timeout=30, message="the 2 s session to end")
    finally:
        short.stop()


async def test_csrf_token_is_required_for_every_change(api: ApiProcess) -> None:
    browser = await signed_in(api, "csrf@example.com", "owner", PASSWORD)
    body = {"email": "new@example.com", "role": "member"}
    r = await browser.request("POST", "/v1/users", json=body, csrf=False)
    assert r.status == 403 and r.error["field"] == "csrf_token", r.text
    assert "CSRF token is missing or wrong" in r.error["message"]
    r = await browser.request(
        "POST", "/v1/users", json=body, csrf=False, headers={"X-CSRF-Token": "forged"}
    )
    assert r.status == 403 and r.error["field"] == "csrf_token"
    # Another session's token is no good either.
    other = await signed_in(api, "csrf2@example.com", "owner", PASSWORD)
    r = await browser.request(
        "POST", "/v1/users", json=body, csrf=False, headers={"X-CSRF-Token": other.csrf}
    )
    assert r.status == 403
    for method in ("PATCH", "DELETE"):
        r = await browser.request(method, "/v1/users/usr_0000000000000000", json={}, csrf=False)
        assert r.status == 403 and r.error["field"] == "csrf_token", method
    # A form post carries it as csrf_token.
    page = await browser.request("POST", "/signout", form={"csrf_token": "wrong"})
    assert page.status == 403 and "CSRF token" in page.text
    assert page.headers["Content-Security-Policy"] == CSP
    r = await browser.request("POST", "/v1/users", json=body)
    assert r.status == 201, r.text
    # The dashboard's pages carry the same token as the header expects.
    shown = await browser.request("GET", "/ui/recordings")
    if shown.status == 200:
        assert browser.csrf in shown.text
    # Token callers send no cookie and no CSRF token, as before.
    r = await api.request("POST", "/v1/users", json={"email": "tok@example.com", "role": "member"})
    assert r.status == 201, r.text


async def test_cross_site_requests_are_refused(api: ApiProcess) -> None:
    browser = await signed_in(api, "xs@example.com", "owner", PASSWORD)
    body = {"email": "x1@example.com", "role": "member"}
    for origin in ("https://evil.example", "null", "https://127.0.0.1:1"):
        r = await browser.request("POST", "/v1/users", json=body, origin=origin)
        assert r.status == 403 and r.error["field"] == "origin", (origin, r.text)
        assert "Cross-site request refused" in r.error["message"]
    r = await browser.request(
        "POST", "/v1/users", json=body, origin=None, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert r.status == 403 and r.error["field"] == "origin"
    page = await browser.request(
        "POST", "/signout", form={"csrf_token": browser.csrf}, origin="https://evil.example"
    )
    assert page.status == 403 and "Cross-site" in page.text
    # Sign-in itself (no session yet) refuses a cross-site post too: no login CSRF.
    fresh = Browser(api)
    form = await fresh.request("GET", "/signin")
    page = await fresh.request(
        "POST",
        "/signin",
        form={"email": "xs@example.com", "password": PASSWORD, "csrf_token": form.form_token()},
        origin="https://evil.example",
    )
    assert page.status == 403 and not fresh.session
    # ... and a sign-in form posted without its own token is refused.
    page = await Browser(api).request(
        "POST", "/signin", form={"email": "xs@example.com", "password": PASSWORD}
    )
    assert page.status == 403 and "form had expired" in page.text
    # The same request from our own origin goes through.
    r = await browser.request("POST", "/v1/users", json=body)
    assert r.status == 201, r.text


async def test_sign_out_ends_the_session(api: ApiProcess, database_url: str) -> None:
    browser = await signed_in(api, "out@example.com", "member", PASSWORD)
    value = browser.session
    page = await browser.request("POST", "/signout", form={"csrf_token": browser.csrf})
    assert page.status == 303 and page.location == "/signin"
    assert page.cookie(COOKIE)["max-age"] == "0"
    assert not browser.session
    assert await db_fetch(database_url, "SELECT 1 FROM api.sessions") == []
    # The old cookie is worth nothing now.
    replay = Browser(api, jar={COOKIE: (value, "/")})
    assert (await replay.request("GET", "/v1/recordings")).status == 401
    actions = [
        r["action"]
        for r in await db_fetch(
            database_url,
            "SELECT action FROM api.audit_log WHERE actor = 'out@example.com' ORDER BY id",
        )
    ]
    assert actions == ["sign_in", "sign_out"]


async def test_failed_sign_ins_are_rate_limited_across_instances(
    api: ApiProcess, tmp_path: Path, nats_server: NatsServer, database_url: str
) -> None:
    await add_user(api, "rl@example.com", "member", password=PASSWORD)
    browser = Browser(api)
    for _ in range(5):
        page = await browser.sign_in("rl@example.com", "wrong password, sorry")
        assert page.status == 401 and 'role="alert"' in page.text
        assert "email or the password is wrong" in page.text
        assert 'value="rl@example.com"' in page.text  # what was typed stays typed
    # A second API instance (the same database) sees the same count: even the right password
    # waits now.
    other = make_api(tmp_path, nats_server.url, database_url, name="api2")
    other.start()
    try:
        await other.ready()
        page = await Browser(other).sign_in("RL@example.com", PASSWORD)
        assert page.status == 429, page.text
        retry = int(page.headers["Retry-After"])
        assert 0 < retry <= 900
        assert "Too many failed sign-ins for this email" in page.text
        assert 'role="alert"' in page.text
    finally:
        other.stop()
    page = await browser.sign_in("rl@example.com", PASSWORD)
    assert page.status == 429

    # Per client address: 20 failures (any emails) within the window.
    for i in range(15):  # 5 counted already from this address
        page = await browser.sign_in(f"nobody{i}@example.com", "not a password at all")
        assert page.status == 401, (i, page.status)
    page = await browser.sign_in("someone-else@example.com", "whatever it is")
    assert page.status == 429 and "from your address" in page.text
    assert int(page.headers["Retry-After"]) > 0

    # Once the window has passed the user signs in, and the email's failures are forgotten.
    await db_fetch(database_url, "UPDATE api.signin_attempts SET at = at - interval '16 minutes'")
    page = await browser.sign_in("rl@example.com", PASSWORD)
    assert page.status == 303, page.text
    rows = await db_fetch(
        database_url,
        "SELECT actor, detail FROM api.audit_log WHERE action = 'sign_in_failed' ORDER BY id",
    )
    assert rows[0]["actor"] == "rl@example.com"
    assert {r["detail"] for r in rows} == {"wrong email or password", "rate limited"}
    assert PASSWORD not in str([dict(r) for r in rows])


async def test_unknown_emails_are_answered_like_wrong_passwords(api: ApiProcess) -> None:
    await add_user(api, "known@example.com", "member", password=PASSWORD)
    browser = Browser(api)
    known = await browser.sign_in("known@example.com", "a wrong password")
    unknown = await browser.sign_in("unknown@example.com", "a wrong password")
    assert known.status == unknown.status == 401
    assert known.text.replace("known@", "X@") == unknown.text.replace("unknown@", "X@").replace(
        unknown.form_token(), known.form_token()
    )


async def test_an_unknown_email_costs_an_argon2_check_too() -> None:
    passwords.warm()
    before = passwords._dummy_hash.cache_info().hits
    assert await passwords.verify_password(None, "anything at all") is False
    assert passwords._dummy_hash.cache_info().hits == before + 1
    stored = await passwords.hash_password("the right one, long enough")
    assert passwords.is_argon2id(stored) and not passwords.needs_rehash(stored)
    assert await passwords.verify_password(stored, "the right one, long enough") is True
    assert await passwords.verify_password(stored, "the wrong one, long enough") is False


def test_the_request_keys_are_the_dashboards() -> None:
    from services.api import dashboard, web

    assert web.PRINCIPAL == dashboard.PRINCIPAL_KEY
    assert web.CSRF_KEY == dashboard.CSRF_KEY
