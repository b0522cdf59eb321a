"""The dashboard in a real browser against the whole system (`resguardo up`): sign in, watch a
recording move live, a failed upload retained and re-sent with the keyboard alone, a destination
added whose secret then appears nowhere in the page, a member refused, a cross-site post refused,
and no serious accessibility violation on any page (axe-core). Screenshots of every page are kept
under build/test-artifacts/dashboard/."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import Page, expect

from resguardo.publisher import publish
from shared.embedded import free_port

from ..servers import wait_until
from .browser import (
    chromium,
    csrf_of,
    in_thread,
    new_context,
    screenshot,
    serious_violations,
    sign_in,
    tab_to,
)
from .system import RunningSystem, start_system, stop_system

PASSWORD = "a long enough passphrase 1"
CANARY = "CANARY-dashboard-" + "5b7e0c1d9a"
PAGES = ("recordings", "retained", "destinations", "usage", "audit")


def add_user(system: RunningSystem, email: str, role: str) -> None:
    system.cli("users", "add", email, "--role", role, "--password-stdin", input=PASSWORD + "\n")


def start_recording(system: RunningSystem, destination: str) -> dict[str, Any]:
    started: dict[str, Any] = system.cli_json("recordings", "start", "--destination", destination)
    return started


def talk(system: RunningSystem, started: dict[str, Any], seconds: float = 3.0) -> None:
    """A participant for a few seconds (in a thread: Playwright's sync API owns this one)."""
    ca = Path(system.endpoints["ca_file"])
    thread = in_thread(
        lambda: publish(
            started["whip_url"], started["token"], participant="alice", seconds=seconds, ca_file=ca
        )
    )
    thread.join(60)
    assert not thread.is_alive(), "the publisher did not finish"


def state_cell(page: Page, rid: str) -> Any:
    return page.locator(f'tr[data-recording-id="{rid}"] [data-field="state"]')


@pytest.mark.slow
def test_the_dashboard_in_a_browser(tmp_path: Path) -> None:
    system = start_system(tmp_path, {"RESGUARDO_UPLOAD_MAX_ATTEMPTS": "1"})
    try:
        base = system.endpoints["api_url"].rstrip("/")
        remote = tmp_path / "remote"
        (tmp_path / "local.json").write_text(json.dumps({"path": str(remote)}))
        system.cli(
            "destinations",
            "add",
            "local",
            "--provider",
            "file",
            "--config",
            str(tmp_path / "local.json"),
        )
        add_user(system, "owner@example.com", "owner")
        add_user(system, "member@example.com", "member")
        with chromium() as browser:
            owner = new_context(browser)
            page = owner.new_page()
            sign_in(page, base, "owner@example.com", PASSWORD)
            page.evaluate("window.__sameDocument = true")

            # A recording appears and moves from capturing to uploaded, no reload.
            started = start_recording(system, "local")
            rid = started["recording_id"]
            expect(state_cell(page, rid)).to_have_text("capturing", timeout=30_000)
            talk(system, started)
            system.cli("recordings", "stop", rid)
            expect(state_cell(page, rid)).to_have_text("uploaded", timeout=120_000)
            assert page.evaluate("window.__sameDocument") is True  # the same page, live
            screenshot(page, "recordings")
            assert serious_violations(page) == []

            page.goto(f"{base}/ui/recordings/{rid}")
            expect(page.get_by_role("heading", name=f"Recording {rid}")).to_be_visible()
            expect(page.locator("table.files")).to_contain_text("manifest.json")
            screenshot(page, "recording")
            assert serious_violations(page) == []

            # The destination fails: the folder is a file now. The upload is retained.
            shutil.rmtree(remote)
            remote.write_text("not a folder")
            failing = start_recording(system, "local")
            frid = failing["recording_id"]
            talk(system, failing)
            system.cli("recordings", "stop", frid)
            system.wait_state(frid, {"retained"})
            page.goto(f"{base}/ui/retained")
            row = page.locator(f'tr[data-recording-id="{frid}"]')
            expect(row).to_contain_text("retained")
            screenshot(page, "retained")
            assert serious_violations(page) == []

            # Fixed, then re-sent with the keyboard alone: Tab to the button, Enter, Enter.
            remote.unlink()
            remote.mkdir()
            tab_to(page, f'button.resend[data-recording-id="{frid}"]')
            page.keyboard.press("Enter")
            expect(page.locator("#resend-dialog")).to_be_visible()
            assert page.evaluate("document.activeElement.id") == "resend-confirm"
            page.keyboard.press("Enter")
            expect(state_cell(page, frid)).to_have_text("uploaded", timeout=120_000)

            # A destination through the form: its secret is nowhere in the page afterwards.
            page.goto(f"{base}/ui/destinations")
            page.get_by_label("Name", exact=True).fill("offsite")
            page.get_by_label("Provider", exact=True).select_option("s3")
            s3 = page.locator('fieldset[data-provider="s3"]')
            s3.get_by_label("bucket (required)").fill("offsite-bucket")
            s3.get_by_label("access_key_id (required) (secret)").fill("AKIDDASHBOARD")
            s3.get_by_label("secret_access_key (required) (secret)").fill(CANARY)
            expect(page.locator("#secret-counter")).to_contain_text("/ ")
            page.get_by_label("Test the destination before it is saved").uncheck()
            page.get_by_role("button", name="Add destination").click()
            expect(page.locator('tr[data-destination="offsite"]')).to_be_visible(timeout=30_000)
            html = page.content()
            values = page.evaluate(
                "Array.from(document.querySelectorAll('input')).map(i => i.value).join(' ')"
            )
            assert CANARY not in html and CANARY not in values
            screenshot(page, "destinations")
            assert serious_violations(page) == []

            for name in ("usage", "audit"):
                page.goto(f"{base}/ui/{name}")
                expect(page.get_by_role("heading", level=1)).to_be_visible()
                screenshot(page, name)
                assert serious_violations(page) == [], name

            # A member: no destination form, and a direct POST is refused.
            member = new_context(browser).new_page()
            sign_in(member, base, "member@example.com", PASSWORD)
            member.goto(f"{base}/ui/destinations")
            expect(member.locator("#destination-form")).to_have_count(0)
            refused = member.request.post(
                f"{base}/v1/destinations",
                data=json.dumps(
                    {"name": "sneaky", "provider": "file", "config": {"path": "/tmp/x"}}
                ),
                headers={"Content-Type": "application/json", "X-CSRF-Token": csrf_of(member)},
            )
            assert refused.status == 403

            # A cross-site form post, with the owner signed in, is refused.
            attacker_port = free_port()
            thread = in_thread(lambda: serve_attacker(attacker_port, base, rid))
            wait_until(lambda: thread.is_alive(), timeout=5)
            before = len(system.cli_json("recordings", "show", rid).get("events", []))
            attack = owner.new_page()
            attack.goto(f"http://localhost:{attacker_port}/")
            attack.wait_for_timeout(2000)
            after = system.cli_json("recordings", "show", rid).get("events", [])
            assert not [e for e in after if e["type"] == "recording.resend_requested"]
            assert len(after) >= before

            page.goto(f"{base}/signin")  # signed in: the form still renders
            signin = new_context(browser).new_page()
            signin.goto(f"{base}/signin")
            screenshot(signin, "signin")
            assert serious_violations(signin) == []
        logs = system.logs()
        assert CANARY not in logs and PASSWORD not in logs
    finally:
        stop_system(system)


def serve_attacker(port: int, base: str, rid: str) -> Any:
    """Another site whose page posts a re-send form to the API as soon as it loads."""
    page = f"""<!doctype html><html><body>
<form id="f" method="post" action="{base}/v1/recordings/{rid}/resend"
      enctype="text/plain"><input name='{{"destination":"local","x":"' value='"}}'></form>
<script>document.getElementById("f").submit()</script></body></html>"""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", index)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.sleep(30)
        await runner.cleanup()

    return main()
