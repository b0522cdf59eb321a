"""The SSRF guard against real sockets: a real aiohttp receiver on 127.0.0.1.

The rebinding tests use a resolver we control. That is no mock of a part of ours: it plays the
attacker's DNS server, which answers one thing at registration and another at delivery.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from services.notifier.targets import (
    AddressKind,
    AddressRefused,
    GuardedResolver,
    TargetPolicy,
    URLRefused,
)

STRICT = TargetPolicy()
DEV = TargetPolicy(allow_private=True)
PUBLIC_ADDRESS = "93.184.215.14"


@dataclass
class Receiver:
    port: int
    hits: list[str] = field(default_factory=list)

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    state = Receiver(port=0)  # the port is known once the site listens

    async def hook(request: web.Request) -> web.Response:
        state.hits.append(request.path)
        return web.Response(status=204)

    async def to_metadata(request: web.Request) -> web.Response:
        state.hits.append(request.path)
        raise web.HTTPTemporaryRedirect("http://169.254.169.254/latest/meta-data/")

    async def to_credentials(request: web.Request) -> web.Response:
        state.hits.append(request.path)
        raise web.HTTPTemporaryRedirect(f"http://admin:hunter2@127.0.0.1:{state.port}/hook")

    app.router.add_route("*", "/hook", hook)
    app.router.add_get("/to-metadata", to_metadata)
    app.router.add_get("/to-credentials", to_credentials)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        await runner.cleanup()


class AttackerDNS(AbstractResolver):
    """Answers each lookup with the next list of addresses; the last list repeats."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = [list(a) for a in answers]
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        index = min(len(self.lookups), len(self.answers)) - 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[index]
        ]

    async def close(self) -> None:
        pass


async def test_loopback_literal_is_refused_at_connect_by_default(receiver: Receiver) -> None:
    # The bare connector, without the URL middleware: the socket factory alone must hold.
    async with aiohttp.ClientSession(connector=STRICT.connector()) as session:
        with pytest.raises(AddressRefused, match="loopback") as caught:
            await session.get(receiver.url())
    assert caught.value.kinds == (AddressKind.LOOPBACK,)
    assert receiver.hits == []


async def test_localhost_resolved_by_real_dns_is_refused_at_connect(receiver: Receiver) -> None:
    async with aiohttp.ClientSession(connector=STRICT.connector()) as session:
        with pytest.raises(AddressRefused, match=r"localhost resolves only to"):
            await session.get(receiver.url(host="localhost"))
    assert receiver.hits == []


async def test_guarded_session_refuses_before_connecting(receiver: Receiver) -> None:
    async with STRICT.session() as session:
        with pytest.raises(URLRefused, match="https"):
            await session.post(receiver.url(), data=b"{}")
        with pytest.raises(AddressRefused):
            await session.post(receiver.url(scheme="https"), data=b"{}")
    assert receiver.hits == []


async def test_allow_private_reaches_a_local_receiver(receiver: Receiver) -> None:
    await DEV.check_target(receiver.url())
    await DEV.check_target(receiver.url(host="localhost"))
    async with DEV.session() as session:
        async with session.post(receiver.url(), data=b"{}", allow_redirects=False) as resp:
            assert resp.status == 204
        async with session.post(receiver.url(host="localhost"), data=b"{}") as resp:
            assert resp.status == 204
    assert receiver.hits == ["/hook", "/hook"]


@pytest.mark.parametrize("rebound_to", ["127.0.0.1", "::ffff:127.0.0.1"])
async def test_dns_rebinding_is_refused_at_connect_time(
    receiver: Receiver, rebound_to: str
) -> None:
    dns = AttackerDNS([PUBLIC_ADDRESS], [rebound_to])
    url = receiver.url(host="hooks.example.com", scheme="https")
    # Registration sees the public answer and passes...
    await STRICT.check_target(url, resolver=dns)
    # ...the delivery's own lookup gets the loopback answer and never connects.
    async with STRICT.session(resolver=dns) as session:
        with pytest.raises(AddressRefused, match=r"hooks\.example\.com resolves only to"):
            await session.post(url, data=b"{}", allow_redirects=False)
    assert dns.lookups == ["hooks.example.com", "hooks.example.com"]
    assert receiver.hits == []


async def test_rebinding_answer_at_registration_is_refused() -> None:
    dns = AttackerDNS(["127.0.0.1", "169.254.169.254"])
    with pytest.raises(AddressRefused) as caught:
        await STRICT.check_target("https://hooks.example.com/hook", resolver=dns)
    assert caught.value.kinds == (AddressKind.LOOPBACK, AddressKind.METADATA)
    assert "169.254.169.254 (a cloud metadata service address)" in str(caught.value)


async def test_mixed_answers_connect_only_to_an_allowed_address(receiver: Receiver) -> None:
    # Metadata first: under allow_private it is still filtered out, and the loopback one is used.
    dns = AttackerDNS(["169.254.169.254", "127.0.0.1"])
    async with DEV.session(resolver=dns) as session:
        async with session.get(receiver.url(host="receiver.test")) as resp:
            assert resp.status == 204
    assert receiver.hits == ["/hook"]


async def test_resolver_keeps_only_allowed_answers() -> None:
    dns = AttackerDNS(["8.8.8.8", "127.0.0.1", "::ffff:10.0.0.1", "2606:4700::1111", "bogus"])
    guard = GuardedResolver(STRICT, dns)
    answers = await guard.resolve("hooks.example.com", 443, socket.AF_UNSPEC)
    assert [a["host"] for a in answers] == ["8.8.8.8", "2606:4700::1111"]


async def test_resolver_with_no_answer_is_a_dns_error() -> None:
    async with aiohttp.ClientSession(connector=STRICT.connector(resolver=AttackerDNS([]))) as s:
        with pytest.raises(aiohttp.ClientConnectorDNSError):
            await s.get("https://hooks.example.com/")


async def test_redirect_hops_are_rechecked(receiver: Receiver) -> None:
    async with DEV.session() as session:
        # Not followed: the notifier gets the 307 back and records a failed delivery.
        async with session.get(receiver.url("/to-metadata"), allow_redirects=False) as resp:
            assert resp.status == 307
        # Followed anyway: the next hop's URL is checked before any connection is made.
        with pytest.raises(AddressRefused, match="metadata"):
            await session.get(receiver.url("/to-metadata"))
        with pytest.raises(URLRefused, match="credentials") as caught:
            await session.get(receiver.url("/to-credentials"))
        assert "hunter2" not in str(caught.value)
    assert receiver.hits == ["/to-metadata", "/to-metadata", "/to-credentials"]
