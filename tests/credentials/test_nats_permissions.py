"""Per-service NATS users: the embedded server itself refuses what a service has no right to do.

A real nats-server with the users ``resguardo up`` makes (``shared.embedded.system_users``), a
real vault logged in as ``credentials``, and clients logged in as the other services."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS

from shared import natsio, sealedbox, vault_rpc
from shared.embedded import OPERATOR, SERVICE_RIGHTS, NatsServer, system_users
from shared.events import recordings as rec_events
from shared.ids import new_recording_id, new_tenant_id
from shared.recording_key import RecordingKeyError, fetch_recording_key
from tests.servers import ServiceProcess

from .helpers import VaultClient, publish_attempt, publish_started, start_vault, wait_ready

PASSWORDS = {user: secrets.token_urlsafe(24) for user in (*SERVICE_RIGHTS, OPERATOR)}


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[NatsServer]:
    log = (tmp_path / "nats-secured.log").open("wb")
    server = NatsServer(tmp_path / "nats-secured", users=system_users(PASSWORDS), log=log).start()
    try:
        yield server
    finally:
        server.stop()
        log.close()


class Login:
    """A connection as one user, collecting the errors the server sends it."""

    def __init__(self, nc: NATS, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    async def violations(self, subject: str) -> list[str]:
        """Permission violations naming ``subject`` (waits briefly: they arrive async)."""
        for _ in range(50):
            found = [e for e in self.errors if "permissions violation" in e and subject in e]
            if found:
                return found
            await asyncio.sleep(0.05)
        return []


async def login(server: NatsServer, user: str) -> Login:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        server.url,
        user=user,
        password=PASSWORDS[user],
        inbox_prefix=natsio.inbox_prefix(user),
        error_cb=on_error,
        max_reconnect_attempts=0,
    )
    return Login(nc, errors)


@pytest.fixture
async def logins(secured_nats: NatsServer) -> AsyncIterator[dict[str, Login]]:
    out = {user: await login(secured_nats, user) for user in (*SERVICE_RIGHTS, OPERATOR)}
    await natsio.ensure_streams(out[OPERATOR].nc.jetstream())
    try:
        yield out
    finally:
        for lg in out.values():
            await lg.nc.close()


@pytest.fixture
def secured_vault(
    tmp_path: Path, secured_nats: NatsServer, database_url: str
) -> Iterator[ServiceProcess]:
    proc = start_vault(
        tmp_path,
        secured_nats.url,
        database_url,
        nats_user="credentials",
        nats_password=PASSWORDS["credentials"],
    )
    yield proc
    proc.stop()


def grant_request(job_id: str, rid: str, tenant: str, dest: str) -> bytes:
    return msgspec.json.encode(
        vault_rpc.GrantRequest(
            job_id=job_id,
            recording_id=rid,
            tenant_id=tenant,
            destination_id=dest,
            public_key=sealedbox.public_bytes(X25519PrivateKey.generate()),
        )
    )


async def test_without_a_login_the_server_refuses_the_connection(
    secured_nats: NatsServer,
) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(secured_nats.url, max_reconnect_attempts=0, allow_reconnect=False)
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            secured_nats.url,
            user="uploader",
            password="not-the-password",
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )


async def test_only_the_uploader_may_request_grants_and_only_the_vault_answers(
    logins: dict[str, Login], secured_vault: ServiceProcess, tmp_path: Path
) -> None:
    uploader, api = logins["uploader"], logins["api"]
    await wait_ready(api.nc, secured_vault)  # the API may ask for the vault's public key

    # A real job: the recording started (by the API), the attempt announced (by the uploader).
    tenant = new_tenant_id()
    dest = await VaultClient(api.nc).create(
        tenant, "main", "file", {"path": str(tmp_path / "remote")}
    )
    assert dest.destination is not None, dest.problem
    dest_id = dest.destination.destination_id
    rid = new_recording_id()
    await publish_started(api.nc.jetstream(), rid, tenant, dest_id)
    await publish_attempt(uploader.nc.jetstream(), rid, tenant, dest_id, f"{rid}:1")

    # Every other service's login: the server drops the request with a permissions violation,
    # so the vault never sees it and the request only times out.
    for name in ("api", "proxy", "transcoder", "credentials"):
        other = logins[name]
        with pytest.raises(nats.errors.TimeoutError):
            await other.nc.request(
                vault_rpc.SUBJECT_GRANT,
                grant_request(f"{rid}:1", rid, tenant, dest_id),
                timeout=0.5,
            )
        assert await other.violations(f'publish to "{vault_rpc.SUBJECT_GRANT}"'), other.errors

    # ...and the job is still ungranted: the uploader gets the one grant.
    msg = await uploader.nc.request(
        vault_rpc.SUBJECT_GRANT, grant_request(f"{rid}:1", rid, tenant, dest_id), timeout=10
    )
    reply = msgspec.json.decode(msg.data, type=vault_rpc.GrantReply)
    assert reply.problem is None and reply.sealed, reply.problem
    assert uploader.errors == []


async def test_only_services_that_touch_the_backup_may_ask_for_recording_keys(
    logins: dict[str, Login], secured_vault: ServiceProcess
) -> None:
    api = logins["api"]
    await wait_ready(api.nc, secured_vault)
    tenant, rid = new_tenant_id(), new_recording_id()
    await publish_started(api.nc.jetstream(), rid, tenant, "dst_unused")
    rights = {"api": False, "credentials": False, "proxy": True, "transcoder": True}
    for name, allowed in {**rights, "uploader": True}.items():
        lg = logins[name]
        try:
            key = await fetch_recording_key(
                lg.nc,
                recording_id=rid,
                tenant_id=tenant,
                purpose="capture",
                service=name,
                timeout=1.0 if not allowed else 10.0,
                attempts=1,
            )
        except RecordingKeyError:
            assert not allowed, name
            assert await lg.violations(f'publish to "{vault_rpc.SUBJECT_RECORDING_KEY}"'), name
        else:
            assert allowed, name
            key.wipe()


async def test_no_one_but_the_vault_may_listen_on_vault_subjects(
    logins: dict[str, Login],
) -> None:
    for name in ("api", "proxy", "transcoder", "uploader", "notifier"):
        lg = logins[name]
        await lg.nc.subscribe("rpc.vault.>")
        await lg.nc.flush()
        assert await lg.violations('subscription to "rpc.vault.>"'), (name, lg.errors)
    # Nor may a service read another's replies (a grant reply goes to the uploader's inbox).
    api = logins["api"]
    await api.nc.subscribe("_INBOX_uploader.>")
    await api.nc.flush()
    assert await api.violations('subscription to "_inbox_uploader.>"'), api.errors


async def test_a_service_cannot_forge_another_services_events(
    logins: dict[str, Login],
) -> None:
    rid = new_recording_id()
    proxy = logins["proxy"]
    # The proxy pretends to be the uploader and announces an upload job (what a grant needs).
    await proxy.nc.publish(f"uploads.{rid}.attempt_started", b"{}")
    await proxy.nc.flush()
    assert await proxy.violations(f'publish to "uploads.{rid}.attempt_started"'), proxy.errors
    operator = logins[OPERATOR].nc.jetstream()
    from shared.events import uploads as up_events

    assert (
        await natsio.last_event(operator, up_events.STREAM, f"uploads.{rid}.attempt_started")
        is None
    )
    # Nor may it reconfigure or delete a stream it does not own.
    with pytest.raises(nats.errors.TimeoutError):
        await proxy.nc.request("$JS.API.STREAM.DELETE.VAULT", b"", timeout=0.5)
    assert await proxy.violations('publish to "$js.api.stream.delete.vault"')


async def test_each_service_can_do_its_own_work(logins: dict[str, Login]) -> None:
    """What the services rely on is allowed: declare streams, publish their own events, read
    others' facts (direct get and ephemeral consumers)."""
    rid = new_recording_id()
    tenant = new_tenant_id()
    for name, lg in logins.items():
        if name == OPERATOR:
            continue
        js = lg.nc.jetstream()
        await natsio.ensure_streams(js)
        if name == "api":
            await publish_started(js, rid, tenant, "dst_0123456789abcdef")
    for name, lg in logins.items():
        js = lg.nc.jetstream()
        got = await natsio.last_event(js, rec_events.STREAM, f"recordings.{rid}.started")
        assert isinstance(got, rec_events.RecordingStarted), name
        history = await natsio.read_subject(js, rec_events.STREAM, f"recordings.{rid}.>")
        assert len(history) == 1, name
        assert not [e for e in lg.errors if "permissions" in e], (name, lg.errors)


async def test_only_the_notifier_may_ask_for_webhook_secrets(
    logins: dict[str, Login], secured_vault: ServiceProcess
) -> None:
    from shared import webhook_rpc
    from tests.notifier.support import create_endpoint

    api, notifier = logins["api"], logins["notifier"]
    vault_key = await wait_ready(api.nc, secured_vault)
    tenant = new_tenant_id()
    endpoint, _ = await create_endpoint(api.nc, vault_key, tenant, "https://hooks.example.com/")

    def ask(job: str) -> bytes:
        return msgspec.json.encode(
            webhook_rpc.WebhookSecretsRequest(
                tenant_id=tenant,
                endpoint_id=endpoint.endpoint_id,
                job_id=job,
                public_key=sealedbox.public_bytes(X25519PrivateKey.generate()),
            )
        )

    for name in ("api", "proxy", "transcoder", "uploader", "credentials"):
        other = logins[name]
        with pytest.raises(nats.errors.TimeoutError):
            await other.nc.request(webhook_rpc.SUBJECT_SECRETS, ask(f"job-{name}"), timeout=0.5)
        assert await other.violations(f'publish to "{webhook_rpc.SUBJECT_SECRETS}"'), name
    # Nor may anyone but the notifier disable an endpoint, or anyone but the API create one.
    with pytest.raises(nats.errors.TimeoutError):
        await api.nc.request(webhook_rpc.SUBJECT_DISABLE, b"{}", timeout=0.5)
    with pytest.raises(nats.errors.TimeoutError):
        await notifier.nc.request(webhook_rpc.SUBJECT_CREATE, b"{}", timeout=0.5)
    assert await notifier.violations(f'publish to "{webhook_rpc.SUBJECT_CREATE}"')
    msg = await notifier.nc.request(webhook_rpc.SUBJECT_SECRETS, ask("job-notifier"), timeout=10)
    reply = msgspec.json.decode(msg.data, type=webhook_rpc.WebhookSecretsReply)
    assert reply.problem is None and reply.sealed, reply.problem
