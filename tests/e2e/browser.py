"""A real browser on the dashboard: Debian's chromium through Playwright's sync API, axe-core for
accessibility (``axe-playwright-python``, which ships axe-core), screenshots kept as artifacts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
# Kept after the run (CI keeps build/): every page as the tests saw it.
ARTIFACTS = REPO / "build" / "test-artifacts" / "dashboard"
SERIOUS = ("serious", "critical")


@contextmanager
def chromium() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "/usr/bin/chromium is missing; scripts/test-deps.d/browser.sh"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Browser) -> BrowserContext:
    # The API's certificate is the system's own self-signed one.
    return browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})


def sign_in(page: Page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/ui/recordings**")


def serious_violations(page: Page) -> list[dict[str, Any]]:
    results = Axe().run(page)
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in results.response["violations"]
        if v.get("impact") in SERIOUS
    ]


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def csrf_of(page: Page) -> str:
    value = page.locator('form.signout input[name="csrf_token"]').get_attribute("value")
    assert value, "the page carries no CSRF token"
    return value


def in_thread(work: Callable[[], Any]) -> threading.Thread:
    """Run blocking or asyncio work beside Playwright's sync API (which owns this thread)."""

    def run() -> None:
        result = work()
        if asyncio.iscoroutine(result):
            asyncio.run(result)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    """Move the keyboard focus with Tab until ``selector`` has it (as a keyboard user would)."""
    target = page.locator(selector)
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {selector}")
