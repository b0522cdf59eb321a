"""The sign-in pages: ``GET``/``POST /signin``, ``POST /signout`` and the one-time link's
``GET``/``POST /signin/link/{token}`` (set a password, then be signed in).

Before there is a session the forms carry a CSRF token of their own (``sessions.signin_token``,
over a short-lived pre-session cookie), and the middleware refuses cross-site posts to them.
Every sign-in, failed sign-in and sign-out is in the audit trail (who, from which tenant; never a
password or a token); the one-time link's token is kept out of the access log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
from aiohttp import web

from .. import audit_log
from ..auth import links, passwords, ratelimit, sessions, users
from ..dashboard import render
from ..errors import ApiError
from ..roles import Principal
from ..web import CSRF_KEY, DEPS, PRINCIPAL, Deps, page_headers, safe_next

log = logging.getLogger(__name__)

PASSWORD_INPUT_MAX = 4096  # longer is no password anyone typed: refused without hashing it
_LINK_IN_TEXT = re.compile(r"/signin/link/[^\s\"'?#]+")
_REDACTED_LINK = "/signin/link/[redacted]"
ACCESS_LOGGERS = ("services.api.access", "aiohttp.access")


# --- the access log never holds a link's token ------------------------------------------------


def _scrub(value: Any) -> Any:
    if isinstance(value, str) and "/signin/link/" in value:
        return _LINK_IN_TEXT.sub(_REDACTED_LINK, value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


class RedactLinks(logging.Filter):
    """Drops one-time link tokens from access-log lines (the request line, the Referer, and the
    fields the JSON formatter writes out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_scrub(a) for a in record.args)
        for key, value in list(record.__dict__.items()):
            if key not in ("msg", "args") and isinstance(value, str | dict):
                record.__dict__[key] = _scrub(value)
        return True


def install_log_filter() -> None:
    """On the access loggers, and on the root's handlers (so that any other line naming a
    link's path, an error's for instance, loses its token too)."""
    targets: list[logging.Filterer] = [logging.getLogger(n) for n in ACCESS_LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        if not any(isinstance(f, RedactLinks) for f in target.filters):
            target.addFilter(RedactLinks())


# --- helpers ----------------------------------------------------------------------------------


def _deps(request: web.Request) -> Deps:
    return request.app[DEPS]


def _limits(deps: Deps) -> ratelimit.Limits:
    c = deps.config
    return ratelimit.Limits(
        window_s=c.signin_window_s,
        per_email=c.signin_max_failures_per_email,
        per_address=c.signin_max_failures_per_address,
    )


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**page_headers(), "Location": location})


def _form_page(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """A sign-in page whose form carries the pre-session CSRF token (made here if need be)."""
    new_cookies: dict[str, str] = {}
    request[CSRF_KEY] = sessions.signin_token(request, new_cookies)
    response = render(request, template, status=status, **context)
    for value in new_cookies.values():
        sessions.set_signin_cookie(response, value)
    return response


def _signin_form(
    request: web.Request, *, next_path: str, error: str = "", email: str = "", status: int = 200
) -> web.Response:
    return _form_page(
        request, "signin.html", status=status, next=next_path, error=error, email=email
    )


def _form_text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _form_token_ok(request: web.Request, form: Any) -> bool:
    """The pre-session form's CSRF token matches the browser's pre-session cookie."""
    cookie = request.cookies.get(sessions.SIGNIN_COOKIE, "")
    if not sessions.is_value(cookie):
        return False
    return sessions.same_token(_form_text(form, sessions.CSRF_FIELD), sessions.csrf_for(cookie))


_FORM_EXPIRED = "This form had expired, so it was renewed; please try again."


def _signed_in(response: web.Response, deps: Deps, value: str) -> web.Response:
    sessions.set_cookie(response, value, deps.config.session_ttl_s)
    sessions.clear_signin_cookie(response)
    return response


async def _tidy(pool: asyncpg.Pool, deps: Deps) -> None:
    """Forget sessions and links that can no longer be used (cheap: both tables are indexed by
    expiry); done at sign-in, so no timer is needed."""
    try:
        await sessions.prune(pool, deps.config.session_idle_s)
        await links.prune(pool)
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not prune sessions and links", extra={"error": type(exc).__name__})


# --- sign in and out --------------------------------------------------------------------------


async def signin_page(request: web.Request) -> web.Response:
    next_path = safe_next(request.query.get("next"))
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is not None and principal.via == "session":
        return _redirect(next_path)
    return _signin_form(request, next_path=next_path)


async def signin(request: web.Request) -> web.Response:
    deps = _deps(request)
    form = await request.post()
    next_path = safe_next(_form_text(form, "next"))
    email = _form_text(form, "email").strip()
    password = _form_text(form, "password")
    if not _form_token_ok(request, form):
        return _signin_form(
            request, next_path=next_path, email=email, error=_FORM_EXPIRED, status=403
        )
    if not email or not password:
        return _signin_form(
            request,
            next_path=next_path,
            email=email,
            error="Enter both your email and your password.",
            status=422,
        )
    actor = email[: users.EMAIL_MAX]
    key = users.normalize_email(actor)
    try:
        attempt = await ratelimit.begin(deps.pool, key, request.remote or "unknown", _limits(deps))
    except ratelimit.RateLimited as exc:
        await audit_log.record(
            deps.pool, tenant_id=None, actor=actor, action="sign_in_failed", detail="rate limited"
        )
        response = _signin_form(
            request, next_path=next_path, email=email, error=exc.message, status=429
        )
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    found = await users.for_sign_in(deps.pool, key)
    stored = found[1] if found is not None else None
    too_long = len(password) > PASSWORD_INPUT_MAX
    ok = await passwords.verify_password(stored, "" if too_long else password)
    user = found[0] if found is not None else None
    if not ok or too_long or user is None or user.disabled:
        await audit_log.record(
            deps.pool,
            tenant_id=user.tenant_id if user else None,
            actor=actor,
            action="sign_in_failed",
            target=user.user_id if user else "",
            detail="wrong email or password",
        )
        log.info("sign-in failed", extra={"user_id": user.user_id if user else ""})
        return _signin_form(
            request,
            next_path=next_path,
            email=email,
            error="The email or the password is wrong; check both and try again.",
            status=401,
        )
    # Hashes made with older parameters are brought up to today's while the password is here.
    rehashed = (
        await passwords.hash_password(password)
        if stored is not None and passwords.needs_rehash(stored)
        else None
    )
    del password
    async with deps.pool.acquire() as conn, conn.transaction():
        await ratelimit.succeeded(conn, attempt, key)
        if rehashed is not None:
            await users.set_password_hash(conn, user.user_id, rehashed)
        old = request.cookies.get(sessions.COOKIE, "")
        if old:
            await sessions.end(conn, old)
        value = await sessions.create(conn, user.user_id, deps.config.session_ttl_s)
        await audit_log.record(
            conn, tenant_id=user.tenant_id, actor=user.email, action="sign_in", target=user.user_id
        )
    await _tidy(deps.pool, deps)
    log.info("signed in", extra={"user_id": user.user_id, "tenant_id": user.tenant_id})
    return _signed_in(_redirect(next_path), deps, value)


async def signout(request: web.Request) -> web.Response:
    """Only reached with a session and its CSRF token (the middleware sees to both)."""
    deps = _deps(request)
    principal: Principal | None = request.get(PRINCIPAL)
    response = _redirect("/signin")
    if principal is not None and principal.via == "session":
        await sessions.end(deps.pool, request.cookies.get(sessions.COOKIE, ""))
        await audit_log.record(
            deps.pool,
            tenant_id=principal.tenant_id,
            actor=principal.who,
            action="sign_out",
            target=principal.user_id,
        )
        log.info("signed out", extra={"user_id": principal.user_id})
    sessions.clear_cookie(response)
    return response


# --- the one-time link ------------------------------------------------------------------------

_LINK_PROBLEMS = {
    "used": (410, "This sign-in link was used already; each link works once. Sign in with "
             "your password, or ask an admin of your tenant for a new link."),
    "expired": (410, "This sign-in link has expired; ask an admin of your tenant for a new one."),
    "unknown": (404, "This sign-in link is not valid; check that you copied all of it, or ask "
                "an admin of your tenant for a new one."),
}  # fmt: skip


def _link_page(
    request: web.Request, *, status: int = 200, email: str = "", error: str = "", show_form: bool
) -> web.Response:
    response = _form_page(
        request,
        "set_password.html",
        status=status,
        email=email,
        error=error,
        show_form=show_form,
        action=request.path,
        min_length=passwords.MIN_LENGTH,
    )
    # The page's URL holds the token: send it nowhere, not even back to us as a Referer.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _link_problem(request: web.Request, state: str) -> web.Response:
    status, message = _LINK_PROBLEMS.get(state, _LINK_PROBLEMS["unknown"])
    return _link_page(request, status=status, error=message, show_form=False)


async def link_page(request: web.Request) -> web.Response:
    found = await links.peek(_deps(request).pool, request.match_info["token"])
    if found.state != "valid" or found.user is None:
        return _link_problem(request, found.state)
    return _link_page(request, email=found.user.email, show_form=True)


async def link_set_password(request: web.Request) -> web.Response:
    deps = _deps(request)
    token = request.match_info["token"]
    form = await request.post()
    found = await links.peek(deps.pool, token)
    if found.state != "valid" or found.user is None:
        return _link_problem(request, found.state)
    user = found.user
    if not _form_token_ok(request, form):
        return _link_page(
            request, status=403, email=user.email, error=_FORM_EXPIRED, show_form=True
        )
    password, confirm = _form_text(form, "password"), _form_text(form, "confirm")
    try:
        passwords.check_policy(password)
    except ApiError as exc:
        return _link_page(request, status=422, email=user.email, error=exc.message, show_form=True)
    if password != confirm:
        return _link_page(
            request,
            status=422,
            email=user.email,
            error="The two passwords differ; type the same password twice.",
            show_form=True,
        )
    hashed = await passwords.hash_password(password)
    del password, confirm
    async with deps.pool.acquire() as conn, conn.transaction():
        user_id = await links.consume(conn, token)
        if user_id is None:  # another request used it meanwhile, or it just expired
            return _link_problem(request, (await links.peek(conn, token)).state)
        await users.set_password_hash(conn, user_id, hashed)
        await sessions.end_all(conn, user_id)  # a new password ends every older session
        value = await sessions.create(conn, user_id, deps.config.session_ttl_s)
        for action in ("password_set", "sign_in"):
            await audit_log.record(
                conn,
                tenant_id=user.tenant_id,
                actor=user.email,
                action=action,
                target=user_id,
                detail="through a one-time sign-in link",
            )
    log.info("password set through a sign-in link", extra={"user_id": user_id})
    return _signed_in(_redirect(safe_next(None)), deps, value)


def add_routes(app: web.Application) -> None:
    install_log_filter()
    passwords.warm()
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/signin/link/{token}", link_page)
    app.router.add_post("/signin/link/{token}", link_set_password)
