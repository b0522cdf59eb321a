"""A real browser publishes over WHIP: Debian's chromium, headless, fake camera and microphone,
driven by Playwright (``executable_path=/usr/bin/chromium``, no browser download).

The page is served from another origin than the proxy (CORS preflight for real), POSTs its offer
once ICE gathering is complete, publishes ~4 s and DELETEs. The proxy's self-signed certificate
is trusted by pinning its SPKI hash, not by ignoring certificate errors. The capture then goes
through the real transcoder and the output must decode with PyAV without a single error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from nats.js import JetStreamContext
from playwright.async_api import async_playwright

from shared.embedded import NatsServer, free_port
from shared.events import captures

from .conftest import Proxy, history, recording_key, start_recording, stop_recording, wait_for_event
from .media_check import assert_files_match, check_sender_reports
from .transcode import media_file, probe, transcode

CHROMIUM = Path("/usr/bin/chromium")
PAGE = Path(__file__).parent / "browser" / "publish.html"
SECONDS = 4


def spki_sha256(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium_args(spki: str) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream=fps=30",
        "--use-fake-ui-for-media-stream",
        f"--ignore-certificate-errors-spki-list={spki}",
    ]


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The test page on http://127.0.0.1:<another port>: another origin than the proxy."""
    app = web.Application()

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def browser_publish(
    page_url: str, profile: Path, spki: str, args: dict[str, Any]
) -> dict[str, Any]:
    if not await asyncio.to_thread(CHROMIUM.exists):
        raise AssertionError(
            "/usr/bin/chromium is missing; install it with scripts/test-deps.d/browser.sh"
        )
    console: list[str] = []
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile),  # a new, empty profile (--user-data-dir)
            executable_path=str(CHROMIUM),
            headless=True,
            args=chromium_args(spki),
        )
        try:
            page = await context.new_page()
            page.on("console", lambda msg: console.append(msg.text))
            await page.goto(page_url)
            try:
                result: dict[str, Any] = await page.evaluate("(args) => window.publish(args)", args)
            except Exception as exc:
                raise AssertionError(f"the page failed: {exc}; console: {console[-10:]}") from None
        finally:
            await context.close()
    return result


def within(got: float, want: float, tolerance: float = 0.10) -> bool:
    return abs(got - want) <= tolerance * want


async def browser_capture(
    js: JetStreamContext,
    nats_server: NatsServer,
    proxy: Proxy,
    page_url: str,
    tmp_path: Path,
    codec: str,
) -> None:
    rec = await start_recording(js)
    sent = await browser_publish(
        page_url,
        tmp_path / "profile",
        spki_sha256(proxy.ca_file),
        {"url": proxy.whip_url(rec.rid), "token": rec.token, "codec": codec, "seconds": SECONDS},
    )
    print("browser:", sent)
    assert sent["offerHasCandidates"], "the offer was sent before ICE gathering completed"
    assert sent["location"].startswith(proxy.whip_url(rec.rid) + "/")
    assert sent["etag"], "ETag was not readable cross-origin (Access-Control-Expose-Headers)"
    assert sent["deleteStatus"] == 200
    await stop_recording(js, rec)
    await wait_for_event(js, f"captures.{rec.rid}.closed")
    events = await history(js, rec.rid)
    started = {e.kind: e for e in events if isinstance(e, captures.TrackStarted)}
    assert set(started) == {"audio", "video"}
    assert started["video"].codec == f"video/{codec}"
    assert started["audio"].codec == "audio/opus"
    left = [e for e in events if isinstance(e, captures.ParticipantLeft)]
    assert len(left) == 1 and "DELETE" in left[0].reason
    key = await recording_key(js, rec)
    assert assert_files_match(proxy.rec_dir(rec), events, key) > 0
    reports = check_sender_reports(events)  # Chrome's RTCP sender reports, for A/V alignment
    assert reports["audio"] >= 1 and reports["video"] >= 1, reports

    sealed = await transcode(js, nats_server, proxy.backup_root, tmp_path, rec.rid)
    out = media_file(proxy.backup_root, sealed, key, tmp_path / "plain")
    result = probe(out)
    print("output:", out.name, result)
    assert result.errors == [], result.errors[:5]
    assert result.codecs == {"video": codec.lower(), "audio": "opus"}
    video_sent = sent["sent"]["video"]["framesSent"]
    audio_sent = sent["sent"]["audio"]["packetsSent"]  # one Opus frame (20 ms) per packet
    assert video_sent > 60 and audio_sent > 100, sent
    assert within(result.frames["video"], video_sent), (result.frames, video_sent)
    assert within(result.frames["audio"], audio_sent), (result.frames, audio_sent)
    assert within(result.duration_s, sent["published"]), (result.duration_s, sent["published"])


async def test_chromium_publishes_vp8(
    js: JetStreamContext, nats_server: NatsServer, proxy: Proxy, page_url: str, tmp_path: Path
) -> None:
    await browser_capture(js, nats_server, proxy, page_url, tmp_path, "VP8")


async def test_chromium_publishes_h264(
    js: JetStreamContext, nats_server: NatsServer, proxy: Proxy, page_url: str, tmp_path: Path
) -> None:
    await browser_capture(js, nats_server, proxy, page_url, tmp_path, "H264")
