"""A small browser for the sign-in tests: it keeps cookies as a browser does (Path, Max-Age=0
deletes), sends the same-origin headers a browser sends on a form post, never follows
redirects, and signs in through the real /signin form."""

from __future__ import annotations

import http.cookies
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from multidict import CIMultiDictProxy

from services.api.auth.sessions import COOKIE, csrf_for

from .support import ApiProcess

_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]*)"')


@dataclass
class Page:
    status: int
    headers: CIMultiDictProxy[str]
    text: str
    set_cookies: list[http.cookies.Morsel[str]]

    @property
    def body(self) -> Any:
        try:
            return msgspec.json.decode(self.text) if self.text else None
        except msgspec.DecodeError:
            return None

    @property
    def error(self) -> dict[str, str]:
        body = self.body
        assert isinstance(body, dict) and "error" in body, self.text
        err = body["error"]
        assert isinstance(err, dict)
        return err

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def form_token(self) -> str:
        match = _CSRF_INPUT.search(self.text)
        assert match, self.text
        return match.group(1)

    def cookie(self, name: str) -> http.cookies.Morsel[str]:
        for morsel in self.set_cookies:
            if morsel.key == name:
                return morsel
        raise AssertionError(f"no Set-Cookie for {name}: {self.headers.getall('Set-Cookie', [])}")


@dataclass
class Browser:
    api: ApiProcess
    jar: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (value, path)

    @property
    def session(self) -> str:
        return self.jar.get(COOKIE, ("", "/"))[0]

    @property
    def csrf(self) -> str:
        """The session's CSRF token, as the dashboard's pages carry it."""
        return csrf_for(self.session)

    def cookie_header(self, path: str) -> str:
        sent = [
            f"{name}={value}"
            for name, (value, cpath) in self.jar.items()
            if path == cpath or path.startswith(cpath.rstrip("/") + "/") or cpath == "/"
        ]
        return "; ".join(sent)

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
        origin: str | None = "self",
    ) -> Page:
        """``csrf``: send the session's token as X-CSRF-Token on a state-changing JSON call;
        ``origin``: "self" sends the API's own origin and Sec-Fetch-Site: same-origin on
        state-changing requests, as a browser does; None sends neither; else that Origin."""
        hdrs: dict[str, str] = {}
        unsafe = method in ("POST", "PUT", "PATCH", "DELETE")
        if unsafe and origin == "self":
            hdrs.update({"Origin": self.api.url, "Sec-Fetch-Site": "same-origin"})
        elif unsafe and origin is not None:
            hdrs["Origin"] = origin
        if unsafe and csrf and form is None and self.session:
            hdrs["X-CSRF-Token"] = self.csrf
        hdrs.update(headers or {})
        cookies = self.cookie_header(path.split("?")[0])
        if cookies:
            hdrs["Cookie"] = cookies
        data: Any = None
        if json is not None:
            data = msgspec.json.encode(json)
            hdrs["Content-Type"] = "application/json"
        elif form is not None:
            data = form
        async with (
            aiohttp.ClientSession() as client,
            client.request(
                method,
                self.api.url + path,
                data=data,
                headers=hdrs,
                ssl=self.api.ssl_context(),
                allow_redirects=False,
            ) as resp,
        ):
            text = await resp.text()
            morsels = []
            for raw in resp.headers.getall("Set-Cookie", []):
                parsed = http.cookies.SimpleCookie()
                parsed.load(raw)
                for morsel in parsed.values():
                    morsels.append(morsel)
                    if morsel["max-age"] == "0":
                        self.jar.pop(morsel.key, None)
                    else:
                        self.jar[morsel.key] = (morsel.value, morsel["path"] or "/")
            return Page(resp.status, resp.headers, text, morsels)

    async def sign_in(self, email: str, password: str, next_path: str = "") -> Page:
        query = "?" + urllib.parse.urlencode({"next": next_path}) if next_path else ""
        form_page = await self.request("GET", "/signin" + query)
        assert form_page.status == 200, form_page.text
        form = {"email": email, "password": password, "csrf_token": form_page.form_token()}
        if next_path:
            form["next"] = next_path
        return await self.request("POST", "/signin", form=form)


async def add_user(
    api: ApiProcess,
    email: str,
    role: str,
    *,
    token: str = "dev",
    tenant_id: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"email": email, "role": role}
    if tenant_id is not None:
        body["tenant_id"] = tenant_id
    if password is not None:
        body["password"] = password
    r = await api.request("POST", "/v1/users", token=token, json=body)
    assert r.status == 201, r.text
    assert isinstance(r.body, dict)
    return r.body


async def signed_in(
    api: ApiProcess, email: str, role: str, password: str, **kwargs: Any
) -> Browser:
    """A browser signed in as a new user with this role."""
    await add_user(api, email, role, password=password, **kwargs)
    browser = Browser(api)
    page = await browser.sign_in(email, password)
    assert page.status == 303, page.text
    assert browser.session
    return browser
