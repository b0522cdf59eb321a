"""The signing public key endpoint, and destination probes through the API (real API, real
vault, real uploader, which runs the probes; real file destinations; S3 probes are covered
against moto in tests/uploader/test_probe.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from nats.js import JetStreamContext

from shared import signing

from .support import ApiProcess, VaultProcess, wait_offset


async def test_the_signing_public_key_is_served_and_nothing_else(api: ApiProcess) -> None:
    r = await api.request("GET", "/v1/keys/signing")
    assert r.status == 200, r.text
    private = signing.load_or_create(signing.key_path(api.data_dir))
    assert r.body["key_id"] == signing.key_id(private.public_key())
    assert r.body["algorithm"] == "Ed25519"
    assert r.body["public_key_pem"] == signing.public_pem(private)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    body = private_pem.splitlines()[1]  # a line of the private key's base64
    assert "PRIVATE" not in r.text and body not in r.text
    # A signature made with the private key verifies with what the API served.
    assert signing.verify(r.body["public_key_pem"], b"manifest", signing.sign(private, b"manifest"))
    assert (await api.request("GET", "/v1/keys/signing", token="admin")).status == 200
    assert (await api.request("GET", "/v1/keys/signing", token=None)).status == 401


@pytest.mark.usefixtures("uploader")
async def test_destinations_test_endpoint(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path, js: JetStreamContext, database_url: str
) -> None:
    remote = tmp_path / "remote"
    r = await api.request(
        "POST",
        "/v1/destinations",
        json={"name": "local", "provider": "file", "config": {"path": str(remote)}},
    )
    assert r.status == 201, r.text  # probed on the way in
    r = await api.request("POST", "/v1/destinations/local/test")
    assert r.status == 200, r.text
    assert r.body["ok"] is True and r.body["destination"]["name"] == "local"
    assert r.body["probe"]["deleted"] is True and r.body["probe"]["checksum_algorithm"]
    assert [p for p in remote.rglob("*") if p.is_file()] == []

    r = await api.request("POST", "/v1/destinations/nothing/test")
    assert r.status == 404 and r.error["field"] == "destination", r.text
    _, other = await api.create_tenant("other")
    r = await api.request("POST", "/v1/destinations/local/test", token=other)
    assert r.status == 404, r.text
    r = await api.request("POST", "/v1/destinations/local/test", token="admin")
    assert r.status == 403, r.text

    # Stored without a probe, then tested: the test names the field to fix.
    r = await api.request(
        "POST",
        "/v1/destinations",
        json={
            "name": "relative",
            "provider": "file",
            "config": {"path": "not/absolute"},
            "probe": False,
        },
    )
    assert r.status == 201, r.text
    r = await api.request("POST", "/v1/destinations/relative/test")
    assert r.status == 422 and r.error["field"] == "config.path", r.text
    assert "re-create the destination" in r.error["message"]

    # The tests' events (requests, grants, answers) name probe ids, not recordings: the read
    # model has no recording for them.
    for stream in ("VAULT", "UPLOADS"):
        await wait_offset(database_url, stream, (await js.stream_info(stream)).state.last_seq)
    r = await api.request("GET", "/v1/recordings")
    assert r.status == 200 and r.body["recordings"] == [], r.text


@pytest.mark.usefixtures("uploader")
async def test_a_failed_probe_on_add_stores_nothing(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = await api.request(
        "POST",
        "/v1/destinations",
        json={"name": "broken", "provider": "file", "config": {"path": str(blocker)}},
    )
    assert r.status == 422 and r.error["field"] == "config.path", r.text
    assert "--no-probe" in r.error["message"]
    r = await api.request("GET", "/v1/destinations")
    assert r.body["destinations"] == []
