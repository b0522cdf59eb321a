"""``/v1/users``: the dashboard's people. The system admin token manages every tenant's users and
our operators; a tenant's token, owners and admins manage their own tenant's users (never
operators; only an owner or a token may add, change, remove or send a link to an owner).

A user added without a password gets a one-time sign-in link in the answer
(``https://<this API's host>/signin/link/<token>``, valid ``RESGUARDO_SIGNIN_LINK_TTL_S``); the
token is shown there once and only its SHA-256 is stored. Passwords, when sent, are hashed at
once (argon2id) and never logged, stored or echoed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from shared.ids import TENANT_ID_RE

from .. import audit_log
from ..auth import links, passwords, users
from ..errors import ApiError
from ..roles import Action, Principal, can
from ..web import DEPS, json_response, principal_of, read_body, require

log = logging.getLogger(__name__)


class CreateUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    email: str
    role: str
    tenant_id: str | None = None
    password: str | None = msgspec.field(default=None)


class ChangeRole(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: str


@dataclass(frozen=True)
class Scope:
    principal: Principal
    tenant_id: str | None  # the caller's tenant; None with ``every``
    every: bool  # the system admin token: every tenant's users and the operators


def _scope(request: web.Request) -> Scope:
    principal = principal_of(request)
    if can(principal, Action.MANAGE_TENANTS):
        return Scope(principal, None, True)
    principal = require(request, Action.MANAGE_USERS)
    assert principal.tenant_id is not None  # only tenant roles may manage users
    return Scope(principal, principal.tenant_id, False)


def _may_touch_owners(principal: Principal) -> bool:
    return principal.via == "token" or principal.role == "owner"


def _owner_guard(scope: Scope, *roles: str) -> None:
    if "owner" in roles and not _may_touch_owners(scope.principal):
        raise ApiError(
            403,
            "Only an owner (or an API token) may add, change or remove an owner, or send one a "
            "sign-in link.",
            "role",
        )


def _check_tenant_id(value: str) -> str:
    if not TENANT_ID_RE.match(value):
        raise ApiError(
            422, "tenant_id must look like ten_ followed by 16 hex digits; fix it.", "tenant_id"
        )
    return value


def _ref(request: web.Request) -> str:
    ref = request.match_info["user_id"].strip()
    if users.is_user_id(ref) or ("@" in ref and len(ref) <= users.EMAIL_MAX):
        return ref
    raise ApiError(
        400,
        "That is neither a user id (usr_ and 16 hex digits) nor an email; check it with "
        "`resguardo users list`.",
        "user_id",
    )


async def _find(request: web.Request, scope: Scope) -> users.User:
    user = await users.find(
        request.app[DEPS].pool, _ref(request), tenant_id=scope.tenant_id, every=scope.every
    )
    if user is None:
        where = "" if scope.every else " in your tenant"
        raise ApiError(
            404,
            f"No user with this id or email{where}; list them with `resguardo users list`.",
            "user_id",
        )
    return user


def _link_json(request: web.Request, link: links.Link) -> dict[str, Any]:
    # The API's own public base, as the caller reached it.
    return {"signin_link": link.url(f"https://{request.host}"), "expires_at": link.expires_at}


async def create_user(request: web.Request) -> web.Response:
    scope = _scope(request)
    deps = request.app[DEPS]
    body = await read_body(request, CreateUser)
    email = users.check_email(body.email)
    role = users.check_role(body.role)
    asked = body.tenant_id or None
    if scope.every:
        if role == "operator" and asked:
            raise ApiError(
                422, "Operators belong to no tenant (they see every one); drop tenant_id.",
                "tenant_id",
            )  # fmt: skip
        if role != "operator" and not asked:
            raise ApiError(
                422, f"A user with the role {role} belongs to a tenant; send its tenant_id.",
                "tenant_id",
            )  # fmt: skip
        tenant_id = _check_tenant_id(asked) if asked else None
        if tenant_id is not None and not await users.tenant_exists(deps.pool, tenant_id):
            raise ApiError(404, "No tenant with this id; check tenant_id.", "tenant_id")
    else:
        if asked and asked != scope.tenant_id:
            raise ApiError(
                403, "You may add users to your own tenant only; drop tenant_id.", "tenant_id"
            )
        if role == "operator":
            raise ApiError(
                403,
                "Only the system admin token may add operators (our staff, who see every "
                "tenant); choose owner, admin or member.",
                "role",
            )
        _owner_guard(scope, role)
        tenant_id = scope.tenant_id
    password_hash = None
    if body.password is not None:
        password_hash = await passwords.hash_password(passwords.check_policy(body.password))
    del body
    link = None
    async with deps.pool.acquire() as conn, conn.transaction():
        user = await users.create(
            conn, tenant_id=tenant_id, email=email, role=role, password_hash=password_hash
        )
        if user is None:
            raise ApiError(
                409,
                "A user with this email exists already (an email is one person, across every "
                "tenant); change their role, or remove them first.",
                "email",
            )
        if password_hash is None:
            link = await links.issue(conn, user.user_id, deps.config.signin_link_ttl_s)
        await audit_log.record(
            conn,
            tenant_id=user.tenant_id,
            actor=scope.principal.who,
            action="user_added",
            target=user.email,
            detail=f"{user.user_id} as {role}" + ("" if link else ", with a password"),
        )
    log.info(
        "user added", extra={"user_id": user.user_id, "tenant_id": user.tenant_id, "role": role}
    )
    out: dict[str, Any] = {"user": user.to_json()}
    if link is not None:
        out.update(_link_json(request, link))
    return json_response(out, 201)


async def list_users(request: web.Request) -> web.Response:
    scope = _scope(request)
    pool = request.app[DEPS].pool
    asked = request.query.get("tenant_id", "")
    if scope.every and asked:
        found = await users.list_users(pool, tenant_id=_check_tenant_id(asked))
    elif asked and asked != scope.tenant_id:
        raise ApiError(
            403, "You may only list your own tenant's users; drop tenant_id.", "tenant_id"
        )
    else:
        found = await users.list_users(pool, tenant_id=scope.tenant_id, every=scope.every)
    return json_response({"users": [u.to_json() for u in found]})


async def show_user(request: web.Request) -> web.Response:
    scope = _scope(request)
    return json_response({"user": (await _find(request, scope)).to_json()})


async def remove_user(request: web.Request) -> web.Response:
    scope = _scope(request)
    deps = request.app[DEPS]
    user = await _find(request, scope)
    _owner_guard(scope, user.role)
    async with deps.pool.acquire() as conn, conn.transaction():
        if not await users.delete(conn, user.user_id):
            raise ApiError(404, "This user was just removed by someone else.", "user_id")
        await audit_log.record(
            conn,
            tenant_id=user.tenant_id,
            actor=scope.principal.who,
            action="user_removed",
            target=user.email,
            detail=f"{user.user_id}, who was {user.role}",
        )
    log.info("user removed", extra={"user_id": user.user_id, "tenant_id": user.tenant_id})
    return json_response({"user": user.to_json()})


async def change_role(request: web.Request) -> web.Response:
    scope = _scope(request)
    deps = request.app[DEPS]
    user = await _find(request, scope)
    body = await read_body(request, ChangeRole)
    role = users.check_role(body.role)
    if (role == "operator") != (user.role == "operator"):
        raise ApiError(
            422,
            "Operators belong to no tenant and tenant users to one, so neither can become the "
            "other; remove the user and add them again.",
            "role",
        )
    _owner_guard(scope, user.role, role)
    if role == user.role:
        return json_response({"user": user.to_json()})
    async with deps.pool.acquire() as conn, conn.transaction():
        changed = await users.set_role(conn, user.user_id, role)
        if changed is None:
            raise ApiError(404, "This user was just removed by someone else.", "user_id")
        await audit_log.record(
            conn,
            tenant_id=user.tenant_id,
            actor=scope.principal.who,
            action="user_role_changed",
            target=user.email,
            detail=f"{user.user_id}: {user.role} -> {role}",
        )
    log.info("user role changed", extra={"user_id": user.user_id, "role": role})
    return json_response({"user": changed.to_json()})


async def new_link(request: web.Request) -> web.Response:
    """A new one-time sign-in link for a user (a lost or expired one, or a forgotten password:
    setting a password through it ends the user's other sessions)."""
    scope = _scope(request)
    deps = request.app[DEPS]
    user = await _find(request, scope)
    _owner_guard(scope, user.role)
    async with deps.pool.acquire() as conn, conn.transaction():
        link = await links.issue(conn, user.user_id, deps.config.signin_link_ttl_s)
        await audit_log.record(
            conn,
            tenant_id=user.tenant_id,
            actor=scope.principal.who,
            action="signin_link_issued",
            target=user.email,
            detail=user.user_id,
        )
    log.info("sign-in link issued", extra={"user_id": user.user_id})
    return json_response({"user": user.to_json(), **_link_json(request, link)}, 201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/users", create_user)
    app.router.add_get("/v1/users", list_users)
    app.router.add_get("/v1/users/{user_id}", show_user)
    app.router.add_delete("/v1/users/{user_id}", remove_user)
    app.router.add_patch("/v1/users/{user_id}", change_role)
    app.router.add_post("/v1/users/{user_id}/signin-link", new_link)
