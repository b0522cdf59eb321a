"""RFC 9725 (WHIP) and CORS details, checked on the proxy as a real process over HTTPS."""

from __future__ import annotations

import re
from pathlib import Path

from nats.js import JetStreamContext

from resguardo.publisher import Publisher
from shared.embedded import NatsServer

from .conftest import Proxy, make_proxy, start_recording
from .test_whip_refusals import make_offer

ORIGIN = "http://127.0.0.1:9"  # a page on another origin
CORS_EXPOSED = {"location", "etag", "link", "accept-post", "allow", "retry-after"}


def csv(value: str) -> set[str]:
    return {v.strip().lower() for v in value.split(",") if v.strip()}


def assert_cors(headers: object) -> None:
    h = dict(headers)  # type: ignore[call-overload]
    assert h["Access-Control-Allow-Origin"] == "*"
    assert CORS_EXPOSED <= csv(h["Access-Control-Expose-Headers"])


async def test_post_answer_headers_and_delete(js: JetStreamContext, proxy: Proxy) -> None:
    rec = await start_recording(js)
    auth = {"Authorization": f"Bearer {rec.token}"}
    async with proxy.http() as http:
        async with http.post(
            proxy.whip_url(rec.rid),
            data=await make_offer(),
            headers={**auth, "Content-Type": "application/sdp", "Origin": ORIGIN},
        ) as resp:
            answer = await resp.text()
            assert resp.status == 201, answer
            assert resp.headers["Content-Type"].startswith("application/sdp")
            assert answer.startswith("v=0") and "a=candidate:" in answer  # no trickle
            location = resp.headers["Location"]
            assert re.fullmatch(rf"/whip/{rec.rid}/[0-9a-f]{{8}}", location), location
            assert re.fullmatch(r'"[0-9a-f]{16}"', resp.headers["ETag"])  # a strong ETag
            assert_cors(resp.headers)
        session = proxy.base_url + location
        assert (await proxy.health())["sessions"] == 1

        # the session URL: no trickle ICE or ICE restart (405 + Allow), OPTIONS says what it takes
        async with http.patch(
            session,
            data="a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
            headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"},
        ) as resp:
            assert resp.status == 405 and "not supported" in await resp.text()
            assert csv(resp.headers["Allow"]) == {"delete", "options"}
            assert_cors(resp.headers)
        async with http.options(session) as resp:
            assert resp.status == 204 and csv(resp.headers["Allow"]) == {"delete", "options"}
        async with http.get(session, headers=auth) as resp:
            assert resp.status == 405 and csv(resp.headers["Allow"]) == {"delete", "options"}

        async with http.delete(session, headers={**auth, "Origin": ORIGIN}) as resp:
            assert resp.status == 200
            assert_cors(resp.headers)
        async with http.delete(session, headers=auth) as resp:
            assert resp.status == 404  # already ended
    health = await proxy.health()
    assert health["sessions"] == 0 and health["peer_connections"] == 0


async def test_endpoint_options_is_a_complete_cors_preflight(
    js: JetStreamContext, proxy: Proxy
) -> None:
    rec = await start_recording(js)
    url = proxy.whip_url(rec.rid)
    async with proxy.http() as http:
        # what a browser sends before a cross-origin POST with a bearer token and an SDP body
        async with http.options(
            url,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        ) as resp:
            assert resp.status == 204
            h = resp.headers
            assert h["Access-Control-Allow-Origin"] == "*"
            assert {"post", "delete", "options"} <= csv(h["Access-Control-Allow-Methods"])
            assert {"authorization", "content-type", "if-match"} <= csv(
                h["Access-Control-Allow-Headers"]
            )
            assert int(h["Access-Control-Max-Age"]) > 0
            assert h["Accept-Post"] == "application/sdp"
            assert csv(h["Allow"]) == {"post", "options"}
        async with http.patch(url, headers={"Authorization": f"Bearer {rec.token}"}) as resp:
            assert resp.status == 405 and csv(resp.headers["Allow"]) == {"post", "options"}
        async with http.get(url) as resp:
            assert resp.status == 405 and csv(resp.headers["Allow"]) == {"post", "options"}
            assert_cors(resp.headers)
        async with http.post(url, data="v=0\r\n", headers={"Origin": ORIGIN}) as resp:
            assert resp.status in (401, 415)  # refusals carry CORS headers too: the page can
            assert_cors(resp.headers)  # read why it was refused


async def test_over_the_limit_is_503_with_retry_after(
    js: JetStreamContext, tmp_path: Path, nats_server: NatsServer
) -> None:
    proxy = make_proxy(tmp_path, nats_server, max_publishers="2")
    await proxy.start()
    try:
        rec = await start_recording(js)
        url = proxy.whip_url(rec.rid)
        async with (
            Publisher(url, rec.token, participant="ana", ca_file=proxy.ca_file),
            Publisher(url, rec.token, participant="bo", ca_file=proxy.ca_file),
            proxy.http() as http,
            http.post(
                url,
                data=await make_offer(),
                headers={
                    "Authorization": f"Bearer {rec.token}",
                    "Content-Type": "application/sdp",
                    "Origin": ORIGIN,
                },
            ) as resp,
        ):
            body = await resp.text()
            assert resp.status == 503 and "limit of 2 publishers" in body, body
            assert int(resp.headers["Retry-After"]) > 0
            assert_cors(resp.headers)
            assert (await proxy.health())["sessions"] == 2
        health = await proxy.health()
        assert health["sessions"] == 0 and health["peer_connections"] == 0
    finally:
        proxy.process.stop()
