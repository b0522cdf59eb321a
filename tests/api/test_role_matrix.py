"""Roles on every API call: every ``/v1`` route of the real app's router (enumerated, so a new
route without an entry in ``EXPECTED`` fails here) is called by every kind of principal against
the real API process, PostgreSQL and vault: the admin token, a tenant's token, the tenant's
owner, admin and member sessions, an operator session and another tenant's owner. A caller the
table refuses must get 403; one it allows must not (what it gets then, 200, 404 or 422, is the
route's business). Then what the roles see: operators no participants' names, another tenant's
owner nothing of this tenant."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.api.app import build_app
from services.api.config import ApiConfig
from services.api.web import Deps

from . import factories as f
from .auth_support import Browser, add_user, signed_in
from .support import (
    ApiProcess,
    Response,
    VaultProcess,
    dev_tenant_id,
    eventually,
    publish_all,
)

PASSWORD = "correct horse battery staple"

# Principal kinds.
SYSTEM = "admin token"
TOKEN = "tenant token"
OWNER = "owner"
ADMIN = "admin"
MEMBER = "member"
OPERATOR = "operator"
OTHER = "other tenant's owner"
KINDS = (SYSTEM, TOKEN, OWNER, ADMIN, MEMBER, OPERATOR, OTHER)

EVERYONE = frozenset(KINDS)
SYSTEM_ONLY = frozenset({SYSTEM})
TENANT_ADMINS = frozenset({TOKEN, OWNER, ADMIN, OTHER})  # everything of their own tenant
VIEWERS = TENANT_ADMINS | {MEMBER, OPERATOR}  # recordings, usage, audit, re-send
DESTINATION_VIEWERS = TENANT_ADMINS | {OPERATOR}  # members do not touch destinations
USER_MANAGERS = TENANT_ADMINS | {SYSTEM}

NO_RECORDING = "rec_" + "0" * 24
NO_USER = "usr_" + "0" * 16
NO_WEBHOOK = "wh_" + "0" * 16
NO_TENANT = "ten_" + "0" * 16
_emails = itertools.count()


def _new_user_body(kind: str, tenant_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"email": f"matrix{next(_emails)}@example.com", "role": "member"}
    if kind == SYSTEM:
        body["tenant_id"] = tenant_id
    return body


@dataclass(frozen=True)
class Entry:
    allowed: frozenset[str]
    body: Callable[[str, str], Any] | None = None  # (kind, tenant_id) -> JSON body


def _const(value: Any) -> Callable[[str, str], Any]:
    return lambda kind, tenant_id: value


# (method, route) -> who may call it, and a body that changes nothing that matters here.
EXPECTED: dict[tuple[str, str], Entry] = {
    ("POST", "/v1/tenants"): Entry(
        SYSTEM_ONLY, lambda kind, t: {"name": f"matrix-{next(_emails)}"}
    ),
    ("PATCH", "/v1/tenants/{tenant_id}"): Entry(
        SYSTEM_ONLY, _const({"backup_capacity_bytes": None})
    ),
    ("POST", "/v1/recordings"): Entry(TENANT_ADMINS, _const({"destination": "nowhere"})),
    ("GET", "/v1/recordings"): Entry(VIEWERS),
    ("GET", "/v1/recordings/{recording_id}"): Entry(VIEWERS),
    ("POST", "/v1/recordings/{recording_id}/stop"): Entry(TENANT_ADMINS, _const({})),
    ("POST", "/v1/recordings/{recording_id}/resend"): Entry(VIEWERS, _const({})),
    ("GET", "/v1/retained"): Entry(VIEWERS),
    ("GET", "/v1/usage"): Entry(VIEWERS),
    ("GET", "/v1/audit"): Entry(VIEWERS),
    ("POST", "/v1/destinations"): Entry(
        TENANT_ADMINS, _const({"name": "../bad", "provider": "file", "config": {}})
    ),
    ("GET", "/v1/destinations"): Entry(DESTINATION_VIEWERS),
    ("GET", "/v1/destinations/{name}"): Entry(DESTINATION_VIEWERS),
    ("PATCH", "/v1/destinations/{name}"): Entry(DESTINATION_VIEWERS, _const({})),
    ("DELETE", "/v1/destinations/{name}"): Entry(TENANT_ADMINS),
    ("POST", "/v1/destinations/{name}/test"): Entry(TENANT_ADMINS, _const({})),
    ("GET", "/v1/keys/signing"): Entry(EVERYONE),
    ("GET", "/v1/openapi.json"): Entry(EVERYONE),
    ("GET", "/v1/webhooks/deliveries"): Entry(TENANT_ADMINS),
    ("POST", "/v1/webhooks/redeliver"): Entry(TENANT_ADMINS, _const({})),
    ("POST", "/v1/webhooks"): Entry(TENANT_ADMINS, _const({"url": "ftp://not-a-webhook"})),
    ("GET", "/v1/webhooks"): Entry(TENANT_ADMINS),
    ("GET", "/v1/webhooks/{endpoint_id}"): Entry(TENANT_ADMINS),
    ("DELETE", "/v1/webhooks/{endpoint_id}"): Entry(TENANT_ADMINS),
    ("POST", "/v1/webhooks/{endpoint_id}/rotate-secret"): Entry(TENANT_ADMINS, _const({})),
    ("POST", "/v1/users"): Entry(USER_MANAGERS, _new_user_body),
    ("GET", "/v1/users"): Entry(USER_MANAGERS),
    ("GET", "/v1/users/{user_id}"): Entry(USER_MANAGERS),
    ("PATCH", "/v1/users/{user_id}"): Entry(USER_MANAGERS, _const({"role": "member"})),
    ("DELETE", "/v1/users/{user_id}"): Entry(USER_MANAGERS),
    ("POST", "/v1/users/{user_id}/signin-link"): Entry(USER_MANAGERS, _const({})),
}


def api_routes() -> set[tuple[str, str]]:
    """Every (method, route) under /v1 that the real app serves (HEAD goes with GET)."""
    deps = Deps(config=ApiConfig(), pool=None, js=None, vault=None, webhooks=None)  # type: ignore[arg-type]
    app = build_app(deps)
    return {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/v1/")
        and r.method not in ("HEAD", "OPTIONS")
    }


def test_every_api_route_has_an_entry() -> None:
    routes = api_routes()
    missing = sorted(routes - EXPECTED.keys())
    assert not missing, f"routes without an entry in the role matrix: {missing}"
    gone = sorted(EXPECTED.keys() - routes)
    assert not gone, f"entries for routes that no longer exist: {gone}"


Call = Callable[[str, str, Any], Awaitable[Response]]


@dataclass
class Principals:
    tenant_id: str
    other_tenant_id: str
    calls: dict[str, Call]


def _token_call(api: ApiProcess, token: str) -> Call:
    async def call(method: str, path: str, body: Any) -> Response:
        return await api.request(method, path, token=token, json=body)

    return call


def _session_call(browser: Browser, operator_tenant: str | None = None) -> Call:
    async def call(method: str, path: str, body: Any) -> Response:
        if operator_tenant is not None:  # operators name the tenant a request is about
            path += ("&" if "?" in path else "?") + f"tenant_id={operator_tenant}"
        page = await browser.request(method, path, json=body)
        return Response(page.status, page.body, page.text)

    return call


async def principals(api: ApiProcess, database_url: str) -> Principals:
    tenant_id = await dev_tenant_id(database_url)
    other_id, other_token = await api.create_tenant("other")
    owner = await signed_in(api, "owner@a.example", "owner", PASSWORD)
    admin = await signed_in(api, "admin@a.example", "admin", PASSWORD)
    member = await signed_in(api, "member@a.example", "member", PASSWORD)
    operator = await signed_in(api, "ops@resguardo.example", "operator", PASSWORD, token="admin")
    other = await signed_in(api, "owner@b.example", "owner", PASSWORD, token=other_token)
    return Principals(
        tenant_id=tenant_id,
        other_tenant_id=other_id,
        calls={
            SYSTEM: _token_call(api, api.admin_token),
            TOKEN: _token_call(api, api.dev_token),
            OWNER: _session_call(owner),
            ADMIN: _session_call(admin),
            MEMBER: _session_call(member),
            OPERATOR: _session_call(operator, operator_tenant=tenant_id),
            OTHER: _session_call(other),
        },
    )


async def a_recording_with_a_participant(js: Any, api: ApiProcess, tenant_id: str) -> str:
    start = f.started(tenant_id, label="board meeting")
    rid = start.recording_id
    await publish_all(js, [start, f.joined(rid, tenant_id, "alice", "s1")])

    async def projected() -> bool:
        r = await api.request("GET", f"/v1/recordings/{rid}")
        return r.status == 200 and bool(r.body["participants"])

    await eventually(projected, message="the recording and its participant projected")
    return rid


def _path(route: str, rid: str) -> str:
    return (
        route.replace("{recording_id}", rid)
        .replace("{name}", "nowhere")
        .replace("{endpoint_id}", NO_WEBHOOK)
        .replace("{user_id}", NO_USER)
        .replace("{tenant_id}", NO_TENANT)
    )


async def test_every_route_against_every_principal(
    api: ApiProcess, vault: VaultProcess, js: Any, database_url: str
) -> None:
    who = await principals(api, database_url)
    rid = await a_recording_with_a_participant(js, api, who.tenant_id)
    wrong: list[str] = []
    for (method, route), entry in sorted(EXPECTED.items()):
        path = _path(route, rid)
        for kind in KINDS:
            body = entry.body(kind, who.tenant_id) if entry.body else None
            r = await who.calls[kind](method, path, body)
            if kind in entry.allowed and r.status == 403:
                wrong.append(f"{kind} refused {method} {route}: {r.text[:200]}")
            elif kind not in entry.allowed and r.status != 403:
                wrong.append(f"{kind} not refused {method} {route}: {r.status} {r.text[:200]}")
            elif r.status == 403:
                message = r.body["error"]["message"] if isinstance(r.body, dict) else r.text
                assert message.endswith("."), (kind, method, route, message)
            assert r.status != 401, (kind, method, route, r.text)
            assert r.status < 500, (kind, method, route, r.text)
    assert not wrong, "\n".join(wrong)


async def test_what_each_role_sees(
    api: ApiProcess, vault: VaultProcess, js: Any, database_url: str
) -> None:
    who = await principals(api, database_url)
    rid = await a_recording_with_a_participant(js, api, who.tenant_id)

    # The owner sees the participant's name; the operator sees the recording without it.
    r = await who.calls[OWNER]("GET", f"/v1/recordings/{rid}", None)
    assert r.status == 200 and r.body["participants"][0]["display_name"] == "Alice"
    assert "Alice" in r.text
    for path in (f"/v1/recordings/{rid}", "/v1/recordings"):
        r = await who.calls[OPERATOR]("GET", path, None)
        assert r.status == 200, r.text
        assert "Alice" not in r.text, path
    shown = (await who.calls[OPERATOR]("GET", f"/v1/recordings/{rid}", None)).body
    assert shown["state"] == "capturing" and shown["label"] == "board meeting"
    assert [p["participant_id"] for p in shown["participants"]] == ["alice"]
    assert all(p["display_name"] == "" for p in shown["participants"])
    r = await api.request("GET", "/v1/destinations", token="admin")
    assert r.status == 403
    assert r.error["message"].startswith("The admin token only manages tenants")

    # The 403 names the role and the action.
    r = await who.calls[MEMBER]("POST", "/v1/destinations", {"name": "x", "provider": "file",
                                                             "config": {}})  # fmt: skip
    assert r.status == 403
    assert r.body["error"]["message"] == (
        "Your role (member) may not add, test and delete destinations."
    )
    r = await who.calls[OPERATOR]("POST", "/v1/webhooks", {"url": "https://1.1.1.1/x"})
    assert r.body["error"]["message"] == "Your role (operator) may not manage webhooks."

    # Another tenant's owner sees nothing of this tenant, and may not ask for it by id.
    r = await who.calls[OTHER]("GET", f"/v1/recordings/{rid}", None)
    assert r.status == 404
    r = await who.calls[OTHER]("GET", "/v1/recordings", None)
    assert r.status == 200 and rid not in r.text
    r = await who.calls[OTHER]("GET", "/v1/users", None)
    assert [u["email"] for u in r.body["users"]] == ["owner@b.example"]
    r = await who.calls[OTHER]("GET", f"/v1/recordings?tenant_id={who.tenant_id}", None)
    assert r.status == 403 and r.body["error"]["field"] == "tenant_id"
    r = await who.calls[OTHER]("DELETE", "/v1/users/member@a.example", None)
    assert r.status == 404
    r = await who.calls[OTHER]("POST", f"/v1/recordings/{rid}/resend", {})
    assert r.status == 404


async def test_operators_name_the_tenant(api: ApiProcess, vault: VaultProcess) -> None:
    await add_user(api, "ops2@resguardo.example", "operator", token="admin", password=PASSWORD)
    browser = Browser(api)
    assert (await browser.sign_in("ops2@resguardo.example", PASSWORD)).status == 303
    r = await browser.request("GET", "/v1/destinations")
    assert r.status == 422 and r.error["field"] == "tenant_id", r.text
    r = await browser.request("GET", "/v1/destinations?tenant_id=ten_nope")
    assert r.status == 422 and r.error["field"] == "tenant_id"
    r = await browser.request("POST", f"/v1/recordings/{NO_RECORDING}/resend", json={})
    assert r.status == 422 and r.error["field"] == "tenant_id"
