"""Bad WHIP requests get a clear 4xx/5xx, open no peer connection and write no file."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from nats.js import JetStreamContext
from yarl import URL

from resguardo.publisher import PatternVideoTrack, Publisher, PublishError, SineAudioTrack
from shared.embedded import NatsServer
from shared.events import captures

from .conftest import Proxy, make_proxy, start_recording, wait_for_count

SDP = "application/sdp"


async def make_offer(*, audio_codec: str = "audio/opus", video: bool = True) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if video:
            pc.addTransceiver(PatternVideoTrack(64, 64), direction="sendonly")
        t = pc.addTransceiver(SineAudioTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        t.setCodecPreferences([c for c in caps if c.mimeType.lower() == audio_codec.lower()])
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def post(
    http: aiohttp.ClientSession,
    url: str | URL,
    body: bytes | str,
    *,
    token: str | None,
    content_type: str = SDP,
) -> tuple[int, str]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_bad_requests_are_refused_cleanly(js: JetStreamContext, proxy: Proxy) -> None:
    a = await start_recording(js)
    b = await start_recording(js)
    offer = await make_offer()
    url_a, url_b = proxy.whip_url(a.rid), proxy.whip_url(b.rid)
    cases: list[tuple[str, int, str]] = []
    async with proxy.http() as http:

        async def expect(name: str, status: int, got: tuple[int, str], words: str) -> None:
            cases.append((name, got[0], got[1]))
            assert got[0] == status, (name, got)
            assert re.search(words, got[1], re.IGNORECASE), (name, got)

        await expect("no token", 401, await post(http, url_a, offer, token=None), "bearer token")
        await expect("wrong token", 401, await post(http, url_a, offer, token="nope"), "not valid")
        await expect(
            "token of A on B", 401, await post(http, url_b, offer, token=a.token), "not valid"
        )
        await expect(
            "garbage body", 400, await post(http, url_a, b"hello\x00world", token=a.token), "SDP"
        )
        await expect(
            "sdp-looking garbage",
            400,
            await post(http, url_a, "v=0\r\nm=audio x y z\r\n", token=a.token),
            "SDP",
        )
        await expect(
            "wrong content type",
            415,
            await post(http, url_a, offer, token=a.token, content_type="text/plain"),
            "application/sdp",
        )
        big = "v=0\r\n" + "a=x-padding:" + "x" * (1 << 20) + "\r\n"
        await expect("1 MB SDP", 413, await post(http, url_a, big, token=a.token), "larger")

        async def chunked() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 16384):
                yield big[i : i + 16384].encode()

        await expect(
            "1 MB SDP without Content-Length",
            413,
            await post(http, url_a, chunked(), token=a.token),  # type: ignore[arg-type]
            "larger",
        )
        await expect(
            "only unsupported codecs",
            400,
            await post(
                http, url_a, await make_offer(audio_codec="audio/PCMU", video=False), token=a.token
            ),
            "cannot be recorded",
        )
        vp9 = offer.replace("VP8/90000", "VP9/90000").replace("H264/90000", "AV1/90000")
        await expect(
            "unknown video codec", 400, await post(http, url_a, vp9, token=a.token), "codecs"
        )
        unknown = proxy.whip_url("rec_" + "0" * 24)
        await expect(
            "unknown recording", 404, await post(http, unknown, offer, token=a.token), "recording"
        )
        base = proxy.base_url
        for name, raw in [
            ("rid with ../", "/whip/..%2F..%2Fetc"),
            ("rid with ../ unencoded", f"/whip/{a.rid}/../{b.rid}x"),
            ("rid with /", f"/whip/{a.rid}%2Fx"),
            ("rid with NUL", f"/whip/{a.rid}%00"),
        ]:
            got = await post(http, URL(base + raw, encoded=True), offer, token=a.token)
            assert got[0] in (404, 405), (name, got)
            cases.append((name, *got))
        for name, participant in [
            ("participant ../", "../../etc"),
            ("participant /", "a/b"),
            ("participant NUL", "a\x00b"),
            ("participant backslash", "..\\x"),
        ]:
            got = await post(
                http, URL(url_a).update_query(participant=participant), offer, token=a.token
            )
            cases.append((name, *got))
            assert got[0] == 400 and "participant name" in got[1], (name, got)

        async with http.patch(url_a, headers={"Authorization": f"Bearer {a.token}"}) as resp:
            assert resp.status == 405 and "not supported" in await resp.text()
        async with http.options(url_a) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
            assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
            assert "Location" in resp.headers["Access-Control-Expose-Headers"]
            assert "ETag" in resp.headers["Access-Control-Expose-Headers"]
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        async with http.delete(
            f"{url_a}/deadbeef", headers={"Authorization": f"Bearer {a.token}"}
        ) as resp:
            assert resp.status == 404
        async with http.delete(f"{url_a}/deadbeef") as resp:
            assert resp.status == 401

    health = await proxy.health()
    assert health["sessions"] == 0 and health["peer_connections"] == 0, (health, cases)
    assert files_under(proxy.backup_root) == []


async def test_session_resource_needs_its_recordings_token(
    js: JetStreamContext, proxy: Proxy
) -> None:
    a = await start_recording(js)
    b = await start_recording(js)
    async with Publisher(
        proxy.whip_url(a.rid), a.token, participant="ana", ca_file=proxy.ca_file
    ) as pub:
        assert pub.location.startswith(proxy.whip_url(a.rid) + "/")
        await wait_for_count(js, a.rid, captures.TrackStarted, 2)
        async with proxy.http() as http:
            # B's token cannot end A's session, nor reach it through B's URL
            async with http.delete(
                pub.location, headers={"Authorization": f"Bearer {b.token}"}
            ) as resp:
                assert resp.status == 401
            sid = pub.location.rsplit("/", 1)[1]
            async with http.delete(
                f"{proxy.whip_url(b.rid)}/{sid}", headers={"Authorization": f"Bearer {b.token}"}
            ) as resp:
                assert resp.status == 404
        assert (await proxy.health())["sessions"] == 1
    assert pub.deleted
    assert not (proxy.backup_root / b.tenant_id).exists()
    assert (proxy.backup_root / a.tenant_id / a.rid).is_dir()


async def test_publisher_limit(
    js: JetStreamContext, tmp_path: Path, nats_server: NatsServer
) -> None:
    proxy = make_proxy(tmp_path, nats_server, max_publishers="1")
    await proxy.start()
    try:
        rec = await start_recording(js)
        url = proxy.whip_url(rec.rid)
        async with Publisher(url, rec.token, participant="ana", ca_file=proxy.ca_file):
            second = Publisher(url, rec.token, participant="bo", ca_file=proxy.ca_file)
            try:
                await second.start()
                raise AssertionError("a publisher beyond the limit was accepted")
            except PublishError as exc:
                assert "503" in str(exc) and "limit" in str(exc)
            finally:
                await second.stop(delete=False)
        health = await proxy.health()
        assert health["sessions"] == 0 and health["peer_connections"] == 0
    finally:
        proxy.process.stop()
