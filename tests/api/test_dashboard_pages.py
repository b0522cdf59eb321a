"""The dashboard's pages against the real API, vault and read model: every page for every role
(signed out: sent to sign in), what each role sees on them (operators no names, members no
destination form), the headers every page carries, and the live stream: a change reaches its own
tenant's pages and no other's."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

import aiohttp

from . import factories as f
from .auth_support import Browser, signed_in
from .support import ApiProcess, VaultProcess, dev_tenant_id, eventually, publish_all
from .test_destinations import s3_body

PASSWORD = "correct horse battery staple"
PAGES = ("recordings", "recordings/{rid}", "retained", "destinations", "usage", "audit")
# Which roles may open which page (the rest get 403); a page's own content is checked below.
ALLOWED = {
    "recordings": {"owner", "admin", "member", "operator"},
    "recordings/{rid}": {"owner", "admin", "member", "operator"},
    "retained": {"owner", "admin", "member", "operator"},
    "destinations": {"owner", "admin", "operator"},
    "usage": {"owner", "admin", "member", "operator"},
    "audit": {"owner", "admin", "member", "operator"},
}


async def a_recording(js: Any, api: ApiProcess, tenant_id: str, *, retained: bool) -> str:
    start = f.started(tenant_id, label="board meeting")
    rid = start.recording_id
    events = [start, f.joined(rid, tenant_id, "alice", "s1"), f.sealed(rid, tenant_id)]
    if retained:
        events.append(f.retained(rid, tenant_id))
    await publish_all(js, events)

    async def projected() -> bool:
        r = await api.request("GET", f"/v1/recordings/{rid}")
        return r.status == 200 and r.body["state"] == ("retained" if retained else "uploading")

    await eventually(projected, message="the recording projected")
    return rid


def inline_code(html: str) -> list[str]:
    """Script and style that is not a file of ours: what the CSP forbids."""
    found = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    found += re.findall(r"\son[a-z]+\s*=", html)
    found += re.findall(r"\sstyle\s*=", html)
    found += re.findall(r"<style", html)
    return found


async def test_every_page_for_every_role(
    api: ApiProcess, vault: VaultProcess, js: Any, database_url: str
) -> None:
    tenant = await dev_tenant_id(database_url)
    canary = "CANARY-" + secrets.token_hex(12)
    r = await api.request("POST", "/v1/destinations", json=s3_body("offsite", canary))
    assert r.status == 201, r.text
    rid = await a_recording(js, api, tenant, retained=True)
    users = {
        role: await signed_in(api, f"{role}@pages.example.com", role, PASSWORD)
        for role in ("owner", "admin", "member")
    }
    users["operator"] = await signed_in(
        api, "operator@pages.example.com", "operator", PASSWORD, token="admin"
    )
    wrong: list[str] = []
    for page in PAGES:
        path = "/ui/" + page.format(rid=rid)
        anonymous = await Browser(api).request("GET", path)
        if anonymous.status != 303 or not anonymous.location.startswith("/signin?next="):
            wrong.append(f"signed out {path}: {anonymous.status}")
        for role, browser in users.items():
            got = await browser.request("GET", path)
            want = 200 if role in ALLOWED[page] else 403
            if got.status != want:
                wrong.append(f"{role} {path}: {got.status}, wanted {want}")
            if got.status == 200:
                csp = got.headers.get("Content-Security-Policy", "")
                assert "script-src 'self'" in csp and "default-src 'none'" in csp, path
                assert got.headers.get("X-Frame-Options") == "DENY", path
                assert inline_code(got.text) == [], (path, inline_code(got.text))
                assert canary not in got.text, path
    assert wrong == []

    owner_view = (await users["owner"].request("GET", f"/ui/recordings/{rid}")).text
    operator_view = (await users["operator"].request("GET", f"/ui/recordings/{rid}")).text
    assert "Alice" in owner_view and "Alice" not in operator_view
    assert "participant 1" in operator_view
    retained = (await users["member"].request("GET", "/ui/retained")).text
    assert f'data-recording-id="{rid}"' in retained and "Re-send" in retained
    owner_dest = (await users["owner"].request("GET", "/ui/destinations")).text
    assert 'id="destination-form"' in owner_dest and 'type="password"' in owner_dest
    operator_dest = await users["operator"].request("GET", f"/ui/destinations?tenant_id={tenant}")
    assert operator_dest.status == 200
    assert 'id="destination-form"' not in operator_dest.text
    assert 'class="dest-settings"' in operator_dest.text  # non-secret settings only
    assert 'name="secret_access_key"' not in operator_dest.text


async def read_events(response: aiohttp.ClientResponse, into: list[str]) -> None:
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            into.append(text)


async def test_the_live_stream_sends_own_tenant_changes_only(
    api: ApiProcess, vault: VaultProcess, js: Any, database_url: str
) -> None:
    tenant = await dev_tenant_id(database_url)
    owner = await signed_in(api, "live@pages.example.com", "owner", PASSWORD)
    r = await api.request("POST", "/v1/tenants", token="admin", json={"name": "elsewhere"})
    assert r.status == 201, r.text
    other_tenant = r.body["tenant_id"]
    received: list[str] = []
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            api.url + "/ui/live",
            headers={"Cookie": owner.cookie_header("/ui/live")},
            ssl=api.ssl_context(),
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_events(response, received))
        try:
            await asyncio.sleep(0.3)
            others = f.started(other_tenant)
            await publish_all(js, [others])
            mine = await a_recording(js, api, tenant, retained=False)

            async def arrived() -> bool:
                return any(mine in line for line in received)

            await eventually(arrived, message="the live row")
        finally:
            reader.cancel()
    assert not any(others.recording_id in line for line in received)
    assert all(tenant in line for line in received)


async def test_the_recordings_page_filters_and_pages(
    api: ApiProcess, vault: VaultProcess, js: Any, database_url: str
) -> None:
    tenant = await dev_tenant_id(database_url)
    starts = [f.started(tenant, label=f"call {i}") for i in range(27)]
    await publish_all(js, starts)
    rid = await a_recording(js, api, tenant, retained=True)
    owner = await signed_in(api, "pager@pages.example.com", "owner", PASSWORD)

    def ids(html: str) -> list[str]:
        return re.findall(r'<tr data-recording-id="(rec_[0-9a-f]+)"', html)

    first = await owner.request("GET", "/ui/recordings")
    assert len(ids(first.text)) == 25, first.text
    link = re.search(r'href="/ui/recordings\?(cursor=[^"]+)">Next page', first.text)
    assert link is not None
    second = await owner.request("GET", "/ui/recordings?" + link.group(1).replace("&amp;", "&"))
    assert len(ids(second.text)) == 3 and not set(ids(first.text)) & set(ids(second.text))
    assert "Next page" not in second.text
    only_retained = await owner.request("GET", "/ui/recordings?state=retained")
    assert ids(only_retained.text) == [rid]
    bad = await owner.request("GET", "/ui/recordings?state=exploded")
    assert bad.status == 422 and "state must be one of" in bad.text
    none_yet = await owner.request("GET", "/ui/recordings?until=2000-01-01")
    assert ids(none_yet.text) == [] and "match these filters" in none_yet.text
