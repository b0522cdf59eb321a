"""Where webhooks may be sent: URL rules, and an SSRF guard on the address actually connected to.

A webhook URL is chosen by a customer, and the notifier runs inside the operator's network, next
to NATS, PostgreSQL, the vault and (in a cloud) the instance metadata service. Checking the URL
once at registration is not enough: DNS can answer a public address then and ``127.0.0.1`` at
delivery time (rebinding). So :class:`TargetPolicy` checks three times:

* :meth:`TargetPolicy.check_url` when a target is registered (scheme, userinfo, port, host);
* :class:`GuardedResolver` on every resolution, keeping only allowed addresses;
* a socket factory on every connect, for the addresses aiohttp never resolves (IP literals),
  plus a client middleware that re-checks the URL of every redirect hop.

``allow_private=True`` (``RESGUARDO_WEBHOOK_ALLOW_PRIVATE=true``, for development and tests)
opens loopback, private, CGNAT and link-local addresses, plain http, any port and local host
names; metadata, multicast, unspecified and reserved addresses stay refused even then.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048


class WebhookTargetError(Exception):
    """Base of this module's errors. Messages name hosts and addresses, never URL credentials."""


class TargetRefused(WebhookTargetError):
    """The policy refuses this target; the message is a sentence saying why."""


class URLRefused(TargetRefused):
    """The URL itself breaks a rule (scheme, userinfo, port, host name form)."""


class AddressRefused(TargetRefused):
    """Every address the target resolves to (or the literal it names) is of a refused kind."""

    def __init__(self, message: str, kinds: Sequence[AddressKind]) -> None:
        super().__init__(message)
        self.kinds = tuple(kinds)


class AddressKind(enum.Enum):
    """What an address is; the values complete the sentence "<address> is ..."."""

    PUBLIC = "a public address"
    LOOPBACK = "a loopback address"
    PRIVATE = "a private-network address"
    SHARED = "a carrier-grade NAT (shared, 100.64.0.0/10) address"
    LINK_LOCAL = "a link-local address"
    METADATA = "a cloud metadata service address"
    MULTICAST = "a multicast or broadcast address"
    UNSPECIFIED = "the unspecified address"
    RESERVED = "a reserved, documentation or non-routable address"


# What a developer's or CI's receiver plausibly listens on; nothing else is ever needed.
_OPENED_BY_ALLOW_PRIVATE = frozenset(
    {AddressKind.LOOPBACK, AddressKind.PRIVATE, AddressKind.SHARED, AddressKind.LINK_LOCAL}
)

# Checked before the ranges: they sit inside link-local/ULA/CGNAT, which allow_private opens.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.169.253",  # AWS VPC DNS
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS VPC DNS over IPv6
    )
)

_K = AddressKind
# First match wins. Sources: the IANA IPv4/IPv6 special-purpose address registries.
_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, AddressKind], ...] = tuple(
    (ipaddress.IPv4Network(net), kind)
    for net, kind in (
        ("0.0.0.0/32", _K.UNSPECIFIED),
        ("0.0.0.0/8", _K.RESERVED),  # "this network": Linux connects 0.x to the local host
        ("10.0.0.0/8", _K.PRIVATE),
        ("100.64.0.0/10", _K.SHARED),
        ("127.0.0.0/8", _K.LOOPBACK),
        ("169.254.0.0/16", _K.LINK_LOCAL),
        ("172.16.0.0/12", _K.PRIVATE),
        ("192.0.0.0/24", _K.RESERVED),
        ("192.0.2.0/24", _K.RESERVED),
        ("192.88.99.0/24", _K.RESERVED),
        ("192.168.0.0/16", _K.PRIVATE),
        ("198.18.0.0/15", _K.RESERVED),
        ("198.51.100.0/24", _K.RESERVED),
        ("203.0.113.0/24", _K.RESERVED),
        ("224.0.0.0/4", _K.MULTICAST),
        ("255.255.255.255/32", _K.MULTICAST),
        ("240.0.0.0/4", _K.RESERVED),
    )
)
_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, AddressKind], ...] = tuple(
    (ipaddress.IPv6Network(net), kind)
    for net, kind in (
        ("::/128", _K.UNSPECIFIED),
        ("::1/128", _K.LOOPBACK),
        ("::/96", _K.RESERVED),  # deprecated IPv4-compatible form
        ("::ffff:0:0:0/96", _K.RESERVED),  # IPv4-translated (SIIT)
        ("64:ff9b:1::/48", _K.PRIVATE),  # local-use NAT64
        ("100::/64", _K.RESERVED),  # discard-only
        ("2001::/32", _K.RESERVED),  # Teredo: the client address inside is obfuscated
        ("2001:2::/48", _K.RESERVED),
        ("2001:10::/28", _K.RESERVED),
        ("2001:20::/28", _K.RESERVED),
        ("2001:db8::/32", _K.RESERVED),
        ("3fff::/20", _K.RESERVED),
        ("5f00::/16", _K.RESERVED),
        ("fc00::/7", _K.PRIVATE),
        ("fe80::/10", _K.LINK_LOCAL),
        ("fec0::/10", _K.PRIVATE),  # deprecated site-local
        ("ff00::/8", _K.MULTICAST),
    )
)
# These prefixes carry an IPv4 address that the packet ends up at, so that one decides.
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def classify(address: str | IPAddress) -> AddressKind:
    """The kind of one address; a str is parsed (``ValueError`` if it is not an IP address)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        # The zone does not change the kind; int() drops it (.exploded breaks on a zone in 3.11).
        ip = ipaddress.IPv6Address(int(ip))
    if ip in _METADATA:
        return _K.METADATA
    if isinstance(ip, ipaddress.IPv4Address):
        for net4, kind in _V4_RANGES:
            if ip in net4:
                return kind
    else:
        if ip in _V4_MAPPED or ip in _NAT64:
            return classify(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            inner = classify(ip.sixtofour)
            return _K.PUBLIC if inner is _K.PUBLIC else inner
        for net6, kind in _V6_RANGES:
            if ip in net6:
                return kind
        if ip not in _GLOBAL_UNICAST:
            return _K.RESERVED  # nothing outside 2000::/3 is allocated for global unicast
    # Catch-all for registry entries the tables above do not list.
    return _K.PUBLIC if ip.is_global else _K.RESERVED


_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# 127.1, 2130706433, 0x7f.1: getaddrinfo turns these into addresses; no real TLD looks like it.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
# RFC 6761 / 6762 / 8375 names and ICANN's .internal: they name hosts on the operator's side.
_LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "lan", "invalid", "test")


@dataclass(frozen=True)
class TargetPolicy:
    """Which webhook targets are allowed; build sessions with :meth:`session`."""

    allow_private: bool = False

    def allows(self, kind: AddressKind) -> bool:
        return kind is AddressKind.PUBLIC or (
            self.allow_private and kind in _OPENED_BY_ALLOW_PRIVATE
        )

    def check_address(self, address: str | IPAddress) -> IPAddress:
        """The parsed address, or :class:`AddressRefused` naming its kind."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            raise AddressRefused(
                f"{address!r} is not an IP address", [AddressKind.RESERVED]
            ) from None
        kind = classify(ip)
        if not self.allows(kind):
            raise AddressRefused(f"{ip} is {kind.value}, which webhooks may not reach", [kind])
        return ip

    def check_url(self, url: str | URL) -> URL:
        """The parsed URL if it may be a webhook target, else :class:`URLRefused`.

        Host names are checked for form here; their addresses only when resolved, at
        :meth:`check_target` and again on every connect.
        """
        raw = str(url)
        if len(raw) > MAX_URL_LENGTH:
            raise URLRefused(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
        # Parsers disagree on these (e.g. "https://a.com\\@b.com"); refusing them leaves one
        # reading of the URL, the one aiohttp will act on.
        if any(c.isspace() or c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
            raise URLRefused("the webhook URL contains whitespace, control characters or '\\'")
        try:
            parsed = URL(raw)
            netloc = urlsplit(raw).netloc
        except ValueError:
            raise URLRefused("the webhook URL could not be parsed") from None
        # Checked before anything that might quote the URL: the userinfo must never be echoed.
        if "@" in netloc or parsed.raw_user is not None or parsed.raw_password is not None:
            raise URLRefused(
                "the webhook URL carries credentials (user:password@); "
                "receivers authenticate deliveries by their signature instead"
            )
        allowed_schemes = ("https", "http") if self.allow_private else ("https",)
        if parsed.scheme not in allowed_schemes:
            raise URLRefused(f"a webhook URL must use {' or '.join(allowed_schemes)}")
        if not parsed.is_absolute() or not parsed.raw_host:
            raise URLRefused("the webhook URL has no host")
        if parsed.raw_fragment:
            raise URLRefused("the webhook URL has a #fragment, which would never be sent")
        self._check_port(parsed)
        host = parsed.raw_host
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            self._check_hostname(host)
        else:
            self.check_address(ip)
        return parsed

    def _check_port(self, parsed: URL) -> None:
        try:
            port = parsed.explicit_port
        except ValueError:
            raise URLRefused("the webhook URL's port is not a number") from None
        if port is None:
            return
        if not 1 <= port <= 65535:
            raise URLRefused(f"port {port} is out of range")
        # Below 1024 live SMTP, SSH and friends: a webhook is an HTTPS request, not a probe.
        if not self.allow_private and port != 443 and port < 1024:
            raise URLRefused(f"port {port} is refused; use 443 or a port from 1024 up")

    def _check_hostname(self, host: str) -> None:
        name = host[:-1] if host.endswith(".") else host
        labels = name.split(".")
        if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise URLRefused(f"{host!r} is not a valid host name")
        if _NUMERIC_LABEL.fullmatch(labels[-1]):
            raise URLRefused(f"{host!r} looks like an IP address in a non-standard form")
        if self.allow_private:
            return
        if len(labels) == 1:
            raise URLRefused(f"{host!r} is a single-label name, resolved by local search domains")
        if any(name == s or name.endswith("." + s) for s in _LOCAL_SUFFIXES):
            raise URLRefused(f"{host!r} is a local or special-use name")

    async def check_target(
        self, url: str | URL, *, resolver: AbstractResolver | None = None
    ) -> URL:
        """Registration-time check: the URL rules, and at least one allowed address now.

        Passing says nothing about later deliveries (DNS can change); the connector checks
        those again. ``resolver`` defaults to aiohttp's own.
        """
        parsed = self.check_url(url)
        host = parsed.raw_host
        assert host is not None  # check_url refuses URLs without one
        try:
            ipaddress.ip_address(host)
        except ValueError:
            guard = GuardedResolver(self, resolver)
            try:
                await guard.resolve(host, parsed.port or 443, socket.AF_UNSPEC)
            finally:
                await guard.close()
        return parsed

    def connector(
        self, *, resolver: AbstractResolver | None = None, **kwargs: Any
    ) -> aiohttp.TCPConnector:
        """A connector that resolves through :class:`GuardedResolver` and checks each socket."""
        return aiohttp.TCPConnector(
            resolver=GuardedResolver(self, resolver),
            socket_factory=self._socket_factory,
            # Sequential attempts: under happy eyeballs a refusal from the socket factory is
            # swallowed by the race instead of reaching the caller as AddressRefused.
            happy_eyeballs_delay=None,
            # Every connection resolves afresh; a cache would only delay seeing a rebinding.
            use_dns_cache=False,
            **kwargs,
        )

    def session(
        self, *, resolver: AbstractResolver | None = None, **kwargs: Any
    ) -> aiohttp.ClientSession:
        """A client session for deliveries. Post with ``allow_redirects=False``; if a caller
        does follow redirects, every hop is still checked, URL and address."""
        return aiohttp.ClientSession(
            connector=self.connector(resolver=resolver),
            middlewares=(self._check_hop,),
            # No HTTP(S)_PROXY from the environment: through a proxy we would check the proxy's
            # address, and the proxy would reach the target unchecked.
            trust_env=False,
            **kwargs,
        )

    def _socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        # The last word: this is the address the socket is about to connect to.
        self.check_address(str(sockaddr[0]))
        return socket.socket(family, type_, proto)

    async def _check_hop(
        self, req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        # Runs for the first request and for each redirect aiohttp follows.
        self.check_url(req.url)
        # aiohttp moves a URL's (or a redirect Location's) user:password@ into this header
        # before we see the URL. Deliveries authenticate by signature: it has no other source.
        if aiohttp.hdrs.AUTHORIZATION in req.headers:
            raise URLRefused(
                "the request or a redirect carries credentials (user:password@); "
                "receivers authenticate deliveries by their signature instead"
            )
        return await handler(req)


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and keeps only the addresses ``policy`` allows."""

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner
        self._owns_inner = inner is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            # Created here, not in __init__: it wants a running loop. Threaded, not aiohttp's
            # default: its close() is a no-op, and TCPConnector never closes a resolver it was
            # handed, so an aiodns one would leak its channel.
            self._inner = aiohttp.ThreadedResolver()
        answers = await self._inner.resolve(host, port, family)
        if not answers:
            raise OSError(f"{host} resolved to no address")
        allowed: list[ResolveResult] = []
        refused: list[tuple[str, AddressKind]] = []
        for answer in answers:
            try:
                kind = classify(answer["host"])
            except ValueError:
                kind = AddressKind.RESERVED
            if self._policy.allows(kind):
                allowed.append(answer)
            else:
                refused.append((answer["host"], kind))
        if not allowed:
            listed = ", ".join(f"{addr} ({kind.value})" for addr, kind in refused)
            raise AddressRefused(
                f"{host} resolves only to addresses webhooks may not reach: {listed}",
                [kind for _, kind in refused],
            )
        return allowed

    async def close(self) -> None:
        if self._owns_inner and self._inner is not None:
            await self._inner.close()
