"""``GET /v1/openapi.json``: a valid OpenAPI 3.1 document (openapi-spec-validator) naming every
route of the app's router but the HTML pages (a route added without its documentation fails
here), and real answers of every operation, 2xx and the main 4xx, validated against it with
openapi-core (2xx requests too). Real API, vault, uploader, NATS and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl

import aiohttp
import msgspec
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_spec_validator import validate
from werkzeug.datastructures import Headers, ImmutableMultiDict

from services.api import openapi
from services.api.app import build_app
from services.api.config import ApiConfig
from shared.ids import new_recording_id
from shared.natsio import publish

from . import factories as f
from .support import ApiProcess, VaultProcess, dev_tenant_id, file_destination, wait_offset
from .test_destinations import s3_body
from .test_webhooks import PUBLIC_URL

METHODS = ("get", "post", "put", "patch", "delete")


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}


def router_operations() -> set[tuple[str, str]]:
    deps = mock.MagicMock()
    deps.config = ApiConfig()
    app = build_app(deps)
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path") or info.get("prefix", "")
        if route.method == "HEAD" or not openapi.documented(path):
            continue  # aiohttp adds HEAD to every GET
        out.add((route.method, path))
    return out


def test_the_document_is_valid_openapi_3_1_and_names_every_route() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation of the 3.1 schema
    documented, routed = operations(doc), router_operations()
    assert routed - documented == set(), "routes without documentation"
    assert documented - routed == set(), "documented operations with no route"
    assert not openapi.documented("/ui/recordings") and not openapi.documented("/signin")
    assert not openapi.documented("/") and openapi.documented("/v1/users")


# --- real answers against the document --------------------------------------------------------


@dataclass
class OARequest:
    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str = "application/json"
    body: bytes | None = None


@dataclass
class OAResponse:
    status_code: int
    content_type: str
    headers: Headers
    data: bytes


@dataclass
class Exchange:
    request: OARequest
    response: OAResponse

    @property
    def label(self) -> str:
        return f"{self.request.method.upper()} {self.request.path} -> {self.response.status_code}"


@dataclass
class Recorder:
    api: ApiProcess
    exchanges: list[Exchange] = field(default_factory=list)

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "dev",
        json: Any = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {}
        if token is not None:
            real = {"dev": self.api.dev_token, "admin": self.api.admin_token}.get(token, token)
            headers["Authorization"] = f"Bearer {real}"
        if json is not None:
            data = msgspec.json.encode(json)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, self.api.url + path, data=data, headers=headers, ssl=self.api.ssl_context()
            ) as resp,
        ):
            raw = await resp.read()
            status, content_type = resp.status, resp.headers.get("Content-Type", "")
            resp_headers = Headers(list(resp.headers.items()))
        plain, _, query = path.partition("?")
        self.exchanges.append(
            Exchange(
                OARequest(
                    host_url=self.api.url,
                    path=plain,
                    method=method.lower(),
                    parameters=RequestParameters(
                        query=ImmutableMultiDict(_pairs(query)), header=Headers(headers)
                    ),
                    body=data,
                ),
                OAResponse(status, content_type.split(";")[0], resp_headers, raw),
            )
        )
        return status, msgspec.json.decode(raw) if raw else None


def _pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def template_of(doc: dict[str, Any], path: str) -> str:
    """The document's path that ``path`` fills in (a literal one before a templated one)."""
    for template in sorted(doc["paths"], key=lambda t: (t.count("{"), t)):
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    raise AssertionError(f"{path} is in no path of the document")


async def exercise(call: Recorder, js: Any, tmp_path: Path, database_url: str) -> None:
    """Every operation: its success and its main refusals."""
    dev = await dev_tenant_id(database_url)
    await call("GET", "/healthz", token=None)
    await call("GET", "/v1/openapi.json")

    # tenants
    status, body = await call("POST", "/v1/tenants", token="admin", json={"name": "other"})
    assert status == 201, body
    other = body["tenant_id"]
    await call("POST", "/v1/tenants", token="admin", json={"name": "other"})  # 409
    await call("POST", "/v1/tenants", token="admin", json={"name": "../x"})  # 422
    await call("POST", "/v1/tenants", json={"name": "mine"})  # 403
    await call("POST", "/v1/tenants", token="admin", data=b"{nope")  # 400
    body_ = {"backup_capacity_bytes": 10**9}
    assert (await call("PATCH", f"/v1/tenants/{other}", token="admin", json=body_))[0] == 200
    await call("PATCH", "/v1/tenants/ten_00000000000000ff", token="admin", json=body_)  # 404
    await call("PATCH", "/v1/tenants/nope", token="admin", json=body_)  # 400
    await call("PATCH", f"/v1/tenants/{other}", token="admin", json={"x": 1})  # 422
    await call("PATCH", f"/v1/tenants/{other}", json=body_)  # 403

    # destinations
    probe = {"name": "archive", **file_destination(tmp_path), "probe": True}
    assert (await call("POST", "/v1/destinations", json=probe))[0] == 201
    assert (await call("POST", "/v1/destinations", json=s3_body("cloud", "CANARY-1")))[0] == 201
    await call("POST", "/v1/destinations", json=s3_body("cloud", "CANARY-2"))  # 409
    await call("POST", "/v1/destinations", json=s3_body("x", "c", bucket=""))  # 422
    await call("POST", "/v1/destinations", json=s3_body("big", "x" * 100_000))  # 413
    await call("GET", "/v1/destinations")
    await call("GET", "/v1/destinations/archive")
    await call("GET", "/v1/destinations/nothing")  # 404
    await call("PATCH", "/v1/destinations/cloud", json={"config": {"region": "eu-central-1"}})
    await call("PATCH", "/v1/destinations/cloud", json={"config": {}})  # 422
    await call("PATCH", "/v1/destinations/nothing", json={"config": {"region": "x"}})  # 404
    assert (await call("POST", "/v1/destinations/archive/test"))[0] == 200
    await call("POST", "/v1/destinations/nothing/test")  # 404

    # recordings
    status, body = await call("POST", "/v1/recordings", json={"destination": "archive"})
    assert status == 201, body
    rid = body["recording_id"]
    await call("POST", "/v1/recordings", json={"destination": "nowhere"})  # 404
    await call("POST", "/v1/recordings", json={})  # 422
    await call("GET", "/v1/recordings?limit=1&state=capturing,retained")
    await call("GET", "/v1/recordings?limit=0")  # 400
    await call("GET", f"/v1/recordings/{rid}")
    await call("GET", f"/v1/recordings/rec_{'0' * 24}")  # 404
    await call("GET", "/v1/recordings/rec_%00")  # 400
    await call("POST", f"/v1/recordings/{rid}/stop")
    await call("POST", f"/v1/recordings/rec_{'0' * 24}/stop")  # 404
    await call("POST", f"/v1/recordings/{rid}/resend")  # 409: capturing
    held = f.started(dev)
    h = held.recording_id
    for event in [held, f.closed(h, dev), f.sealed(h, dev), f.attempt(h, dev)]:
        await publish(js, event)
    await wait_offset(database_url, "UPLOADS", (await publish(js, f.retained(h, dev))).seq)
    await call("POST", f"/v1/recordings/{h}/resend", json={"destination": "archive"})
    await call("POST", f"/v1/recordings/{h}/resend", json={"destination": "gone"})  # 404
    await call("POST", f"/v1/recordings/rec_{'0' * 24}/resend")  # 404
    await call("POST", f"/v1/recordings/{h}/resend", json={"colour": 1})  # 422

    # retained, usage, audit
    await call("GET", "/v1/retained")
    await call("GET", "/v1/retained?state=failed")  # 400
    await call("GET", "/v1/usage?days=7")
    await call("GET", "/v1/usage?days=0")  # 400
    await call("GET", f"/v1/usage?tenant_id={other}")  # 403
    await call("GET", "/v1/audit?limit=2")
    await call("GET", "/v1/audit?since=never")  # 400
    await call("GET", "/v1/audit", token="admin")  # 403
    await call("GET", "/v1/keys/signing")

    # webhooks
    status, body = await call("POST", "/v1/webhooks", json={"url": PUBLIC_URL})
    assert status == 201, body
    endpoint = body["endpoint"]["endpoint_id"]
    await call("POST", "/v1/webhooks", json={"url": "http://127.0.0.1/x"})  # 422
    await call("GET", "/v1/webhooks")
    await call("GET", f"/v1/webhooks/{endpoint}")
    await call("GET", "/v1/webhooks/wh_00000000000000ff")  # 404
    await call("GET", "/v1/webhooks/nope")  # 400
    await call("POST", f"/v1/webhooks/{endpoint}/rotate-secret", json={"grace_s": 60})
    await call("POST", f"/v1/webhooks/{endpoint}/rotate-secret", json={"grace_s": -1})  # 422
    await call("GET", "/v1/webhooks/deliveries?failed=true")
    await call("GET", "/v1/webhooks/deliveries?failed=perhaps")  # 400
    await call("POST", "/v1/webhooks/redeliver", json={"since": "2026-01-01T00:00:00Z"})
    await call("POST", "/v1/webhooks/redeliver", json={})  # 422
    await call("POST", "/v1/webhooks/redeliver", json={"delivery_id": "a" * 32})  # 404
    await call("DELETE", f"/v1/webhooks/{endpoint}")
    await call("DELETE", "/v1/webhooks/wh_00000000000000ff")  # 404

    # users
    member = {"email": "m@example.com", "role": "member"}
    status, body = await call("POST", "/v1/users", json=member)
    assert status == 201, body
    user = body["user"]["user_id"]
    await call("POST", "/v1/users", json=member)  # 409
    await call("POST", "/v1/users", json={"email": "x@example.com", "role": "boss"})  # 422
    await call("GET", "/v1/users")
    await call("GET", f"/v1/users/{user}")
    await call("GET", "/v1/users/nobody@example.com")  # 404
    await call("PATCH", f"/v1/users/{user}", json={"role": "admin"})
    await call("PATCH", f"/v1/users/{user}", json={"role": "operator"})  # 422
    await call("POST", f"/v1/users/{user}/signin-link")
    await call("POST", "/v1/users/nobody@example.com/signin-link")  # 404
    await call("DELETE", f"/v1/users/{user}")
    await call("DELETE", f"/v1/users/{user}")  # 404

    # the end: destinations go, and nothing answers without a token
    await call("DELETE", "/v1/destinations/cloud")
    await call("DELETE", "/v1/destinations/cloud")  # 404
    for method, path in sorted(operations(openapi.document())):
        if path != "/healthz":
            concrete = re.sub(r"\{recording_id\}", new_recording_id(), path)
            concrete = re.sub(r"\{[a-z_]+\}", "x", concrete)
            await call(method, concrete, token=None)  # 401


@pytest.mark.usefixtures("uploader")  # it runs the destination test
async def test_real_answers_of_every_operation_match_the_document(
    api: ApiProcess, vault: VaultProcess, js: Any, tmp_path: Path, database_url: str
) -> None:
    doc = openapi.document()
    spec = OpenAPI.from_dict(doc)
    call = Recorder(api)
    await exercise(call, js, tmp_path, database_url)

    status, served = await call("GET", "/v1/openapi.json")
    assert status == 200 and served == msgspec.json.decode(msgspec.json.encode(doc))

    problems = []
    answered: dict[tuple[str, str], set[int]] = {}
    for ex in call.exchanges:
        key = (ex.request.method.upper(), template_of(doc, ex.request.path))
        answered.setdefault(key, set()).add(ex.response.status_code)
        if ex.response.status_code >= 500:
            problems.append(f"{ex.label}: a server error ({ex.response.data[:300]!r})")
            continue
        try:
            if ex.response.status_code < 300:
                spec.validate_request(ex.request)
            spec.validate_response(ex.request, ex.response)
        except Exception as exc:
            cause = getattr(exc, "__cause__", None)
            problems.append(f"{ex.label}: {type(exc).__name__}: {exc}; {cause}"[:1500])
    assert problems == [], "\n".join(problems)
    assert len(call.exchanges) > 100
    # The validation is not vacuous: an undocumented field, or status, is caught.
    listed = next(e for e in call.exchanges if e.label.startswith("GET /v1/recordings -> 200"))
    page = msgspec.json.decode(listed.response.data)
    page["recordings"][0]["colour"] = "red"
    tampered = replace(listed.response, data=msgspec.json.encode(page))
    with pytest.raises(Exception, match=r"(?i)invalid|validat"):
        spec.validate_response(listed.request, tampered)
    with pytest.raises(Exception):  # noqa: B017
        spec.validate_response(listed.request, replace(listed.response, status_code=418))
    for op in sorted(operations(doc)):
        codes = answered.get(op, set())
        assert any(c < 300 for c in codes), f"{op}: no 2xx answer validated"
        if op != ("GET", "/healthz"):
            assert any(400 <= c < 500 for c in codes), f"{op}: no 4xx answer validated"
