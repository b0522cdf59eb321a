"""Webhook endpoints through the API and the real vault: bad input names the field, the SSRF
policy refuses internal targets, the signing secret is shown once and never again (responses,
the API's log, any stream), and one tenant never sees another's endpoints. Deliveries:
test_webhook_deliveries.py."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.embedded import NatsServer
from shared.events.webhooks import WEBHOOK_TYPES

from .support import ApiProcess, VaultProcess, db_fetch, dev_tenant_id, make_api, wait_offset
from .test_destinations import all_stream_bytes

PUBLIC_URL = "https://1.1.1.1/hooks/resguardo?token=receiver-token"


@pytest.fixture
async def private_api(
    tmp_path: Path, nats_server: NatsServer, database_url: str
) -> AsyncIterator[ApiProcess]:
    """An API with RESGUARDO_WEBHOOK_ALLOW_PRIVATE=true (development and tests)."""
    proc = make_api(
        tmp_path, nats_server.url, database_url, name="private-api", webhook_allow_private="true"
    )
    proc.start()
    try:
        await proc.ready()
        yield proc
    finally:
        proc.stop()


async def add_webhook(api: ApiProcess, token: str = "dev", **body: Any) -> dict[str, Any]:
    r = await api.request("POST", "/v1/webhooks", token=token, json={"url": PUBLIC_URL, **body})
    assert r.status == 201, r.text
    assert isinstance(r.body, dict)
    return r.body


def secret_forms(secret: str) -> list[str]:
    """The secret as shown, its base64 key, and that key re-encoded (urlsafe, hex)."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    assert len(key) >= 24
    return [
        secret,
        secret.removeprefix("whsec_"),
        base64.urlsafe_b64encode(key).decode(),
        key.hex(),
    ]


async def test_endpoint_life_and_the_secret_is_shown_once(
    api: ApiProcess, vault: VaultProcess, js: Any, database_url: str
) -> None:
    texts: list[str] = []
    created = await add_webhook(
        api, events=["recording.uploaded", "recording.failed"], description="billing"
    )
    endpoint, first = created["endpoint"], created["secret"]
    endpoint_id = endpoint["endpoint_id"]
    assert endpoint_id.startswith("wh_")
    assert endpoint["url"] == PUBLIC_URL
    assert sorted(endpoint["events"]) == ["recording.failed", "recording.uploaded"]
    assert endpoint["description"] == "billing"
    assert endpoint["enabled"] is True and endpoint["secrets"] == 1
    assert endpoint["tenant_id"] == await dev_tenant_id(database_url)
    assert "secret" not in endpoint

    r = await api.request("GET", "/v1/webhooks")
    texts.append(r.text)
    assert r.status == 200, r.text
    assert [e["endpoint_id"] for e in r.body["endpoints"]] == [endpoint_id]
    r = await api.request("GET", f"/v1/webhooks/{endpoint_id}")
    texts.append(r.text)
    assert r.status == 200 and r.body["endpoint"]["url"] == PUBLIC_URL, r.text
    fingerprint = r.body["endpoint"]["secret_fingerprint"]

    r = await api.request(
        "POST", f"/v1/webhooks/{endpoint_id}/rotate-secret", json={"grace_s": 3600}
    )
    assert r.status == 200, r.text
    second = r.body["secret"]
    assert second.startswith("whsec_") and second != first
    assert r.body["endpoint"]["secrets"] == 2
    r = await api.request("GET", "/v1/webhooks")
    texts.append(r.text)
    (listed,) = r.body["endpoints"]
    assert listed["secrets"] == 2 and listed["secret_fingerprint"] != fingerprint

    # no body: the default grace period
    r = await api.request("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret")
    assert r.status == 200, r.text
    third = r.body["secret"]
    assert third not in (first, second)

    r = await api.request("DELETE", f"/v1/webhooks/{endpoint_id}")
    texts.append(r.text)
    assert r.status == 200 and r.body["endpoint"]["endpoint_id"] == endpoint_id, r.text
    for method in ("GET", "DELETE"):
        r = await api.request(method, f"/v1/webhooks/{endpoint_id}")
        texts.append(r.text)
        assert r.status == 404 and r.error["field"] == "endpoint_id", r.text
    r = await api.request("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret")
    assert r.status == 404, r.text
    r = await api.request("GET", "/v1/webhooks")
    assert r.body == {"endpoints": []}

    # The canary: no secret anywhere but the answers that made them.
    streams = await all_stream_bytes(js)
    assert b"webhook_changed" in streams  # the vault audited the changes
    logs = api.log_text() + vault.log_text()
    for secret in (first, second, third):
        for form in secret_forms(secret):
            assert form not in "".join(texts)
            assert form not in logs
            assert form.encode() not in streams
    # ...nor the receiver's token in the URL's query, in the logs or the audit trail.
    assert "receiver-token" not in logs
    assert b"receiver-token" not in streams

    # The vault's audit events name an endpoint, not a recording: the read model skips them.
    info = await js.stream_info("VAULT")
    await wait_offset(database_url, "VAULT", info.state.last_seq)
    rows = await db_fetch(
        database_url,
        "SELECT recording_id FROM api.recordings WHERE recording_id LIKE 'wh\\_%' UNION ALL "
        "SELECT recording_id FROM api.recording_events WHERE recording_id LIKE 'wh\\_%'",
    )
    assert rows == []


async def test_bad_input_names_the_field(api: ApiProcess) -> None:
    """Checked before the vault is asked (none runs here)."""

    async def refused(method: str, path: str, body: Any, status: int, field: str) -> str:
        r = await api.request(method, path, json=body)
        assert r.status == status, (path, body, r.text)
        assert r.error["field"] == field, (path, body, r.text)
        return r.error["message"]

    r = await api.request("POST", "/v1/webhooks")
    assert r.status == 400, r.text
    await refused("POST", "/v1/webhooks", {"events": []}, 422, "url")
    await refused("POST", "/v1/webhooks", {"url": 7}, 422, "url")
    message = await refused(
        "POST", "/v1/webhooks", {"url": PUBLIC_URL, "events": ["recording.nope"]}, 422, "events"
    )
    assert "recording.nope" in message and all(t in message for t in WEBHOOK_TYPES)
    await refused(
        "POST", "/v1/webhooks", {"url": PUBLIC_URL, "events": "recording.started"}, 422, "events"
    )
    await refused(
        "POST", "/v1/webhooks", {"url": PUBLIC_URL, "description": "x" * 201}, 422, "description"
    )
    await refused(
        "POST", "/v1/webhooks", {"url": PUBLIC_URL, "description": "a\nb"}, 422, "description"
    )
    await refused("POST", "/v1/webhooks", {"url": PUBLIC_URL, "secret": "mine"}, 422, "secret")

    wid = "wh_0123456789abcdef"
    await refused("GET", "/v1/webhooks/not-an-id", None, 400, "endpoint_id")
    await refused("DELETE", "/v1/webhooks/wh_XYZ", None, 400, "endpoint_id")
    for grace in (-1, 7 * 24 * 3600 + 1, "an hour"):
        await refused(
            "POST", f"/v1/webhooks/{wid}/rotate-secret", {"grace_s": grace}, 422, "grace_s"
        )

    for query, status, field in (
        ("limit=0", 400, "limit"),
        ("limit=x", 400, "limit"),
        ("since=yesterday", 422, "since"),
        ("failed=maybe", 400, "failed"),
        ("endpoint_id=dst_1", 400, "endpoint_id"),
    ):
        await refused("GET", f"/v1/webhooks/deliveries?{query}", None, status, field)

    await refused("POST", "/v1/webhooks/redeliver", {}, 422, "delivery_id")
    await refused("POST", "/v1/webhooks/redeliver", {"delivery_id": "zz"}, 400, "delivery_id")
    await refused(
        "POST",
        "/v1/webhooks/redeliver",
        {"delivery_id": "0" * 32, "since": "2026-01-01T00:00:00Z"},
        422,
        "delivery_id",
    )
    await refused(
        "POST", "/v1/webhooks/redeliver", {"delivery_id": "0" * 32, "endpoint_id": wid}, 422,
        "endpoint_id",
    )  # fmt: skip
    await refused("POST", "/v1/webhooks/redeliver", {"since": "last week"}, 422, "since")
    await refused("POST", "/v1/webhooks/redeliver", {"delivery_id": "0" * 32}, 404, "delivery_id")


async def test_ssrf_refusals(api: ApiProcess) -> None:
    """RESGUARDO_WEBHOOK_ALLOW_PRIVATE is false by default: only public https targets."""
    for url, words in (
        ("https://127.0.0.1:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://1.1.1.1/hook", "https"),
        ("https://localhost/hook", "local"),
        ("https://2130706433/hook", "IP address"),
        ("ftp://1.1.1.1/hook", "https"),
        ("https://1.1.1.1:22/hook", "port 22"),
    ):
        r = await api.request("POST", "/v1/webhooks", json={"url": url})
        assert r.status == 422, (url, r.text)
        assert r.error["field"] == "url", r.text
        assert words in r.error["message"], (url, r.error)
    # Credentials in the URL are refused without being echoed.
    r = await api.request("POST", "/v1/webhooks", json={"url": "https://bob:hunter2@1.1.1.1/"})
    assert r.status == 422 and r.error["field"] == "url", r.text
    assert "hunter2" not in r.text and "hunter2" not in api.log_text()
    # A name that does not resolve (here, or in a sandbox without DNS) is refused too.
    r = await api.request(
        "POST", "/v1/webhooks", json={"url": "https://no-such-host.resguardo-tests.example/"}
    )
    assert r.status == 422 and r.error["field"] == "url", r.text


async def test_allow_private_opens_loopback_but_never_metadata(
    private_api: ApiProcess, vault: VaultProcess
) -> None:
    r = await private_api.request("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9/h"})
    assert r.status == 201, r.text
    assert r.body["endpoint"]["url"] == "http://127.0.0.1:9/h"
    for url in ("http://169.254.169.254/latest", "https://[fd00:ec2::254]/", "http://0.0.0.0/"):
        r = await private_api.request("POST", "/v1/webhooks", json={"url": url})
        assert r.status == 422 and r.error["field"] == "url", (url, r.text)


async def test_tenants_and_roles(api: ApiProcess, vault: VaultProcess) -> None:
    endpoint_id = (await add_webhook(api))["endpoint"]["endpoint_id"]
    # The admin token manages tenants only, as for destinations.
    for method, path in (
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", f"/v1/webhooks/{endpoint_id}"),
        ("DELETE", f"/v1/webhooks/{endpoint_id}"),
        ("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret"),
        ("GET", "/v1/webhooks/deliveries"),
        ("POST", "/v1/webhooks/redeliver"),
    ):
        body = {"url": PUBLIC_URL} if path == "/v1/webhooks" and method == "POST" else None
        r = await api.request(method, path, token="admin", json=body)
        assert r.status == 403, (method, path, r.text)
    r = await api.request("GET", "/v1/webhooks", token=None)
    assert r.status == 401

    # Another tenant sees none of the dev tenant's endpoints.
    _, other = await api.create_tenant("acme")
    r = await api.request("GET", "/v1/webhooks", token=other)
    assert r.status == 200 and r.body == {"endpoints": []}, r.text
    for method, path in (
        ("GET", f"/v1/webhooks/{endpoint_id}"),
        ("DELETE", f"/v1/webhooks/{endpoint_id}"),
        ("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret"),
    ):
        r = await api.request(method, path, token=other)
        assert r.status == 404 and r.error["field"] == "endpoint_id", (method, r.text)
    r = await api.request("GET", f"/v1/webhooks/{endpoint_id}")
    assert r.status == 200, r.text
