"""The address classifier and the URL rules of the webhook SSRF guard (no network here)."""

from __future__ import annotations

import ipaddress

import pytest

from services.notifier.targets import (
    AddressKind,
    AddressRefused,
    TargetPolicy,
    TargetRefused,
    URLRefused,
    classify,
)

K = AddressKind
STRICT = TargetPolicy()
DEV = TargetPolicy(allow_private=True)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        # public
        ("8.8.8.8", K.PUBLIC),
        ("1.1.1.1", K.PUBLIC),
        ("93.184.215.14", K.PUBLIC),
        ("100.63.255.255", K.PUBLIC),  # just below CGNAT
        ("100.128.0.0", K.PUBLIC),  # just above CGNAT
        ("172.32.0.1", K.PUBLIC),  # just above 172.16/12
        ("2606:4700:4700::1111", K.PUBLIC),
        ("2001:4860:4860::8888", K.PUBLIC),
        ("::ffff:8.8.8.8", K.PUBLIC),
        ("64:ff9b::808:808", K.PUBLIC),  # NAT64 of 8.8.8.8
        ("2002:808:808::1", K.PUBLIC),  # 6to4 of 8.8.8.8
        # loopback
        ("127.0.0.1", K.LOOPBACK),
        ("127.255.255.254", K.LOOPBACK),
        ("::1", K.LOOPBACK),
        ("::ffff:127.0.0.1", K.LOOPBACK),
        ("::ffff:7f00:1", K.LOOPBACK),
        ("64:ff9b::7f00:1", K.LOOPBACK),
        ("2002:7f00:1::1", K.LOOPBACK),
        # private
        ("10.0.0.1", K.PRIVATE),
        ("172.16.0.1", K.PRIVATE),
        ("172.31.255.255", K.PRIVATE),
        ("192.168.1.1", K.PRIVATE),
        ("fc00::1", K.PRIVATE),
        ("fd12:3456:789a::1", K.PRIVATE),
        ("fec0::1", K.PRIVATE),
        ("64:ff9b:1::a00:1", K.PRIVATE),
        ("::ffff:10.0.0.1", K.PRIVATE),
        ("::ffff:192.168.0.10", K.PRIVATE),
        # shared (CGNAT)
        ("100.64.0.1", K.SHARED),
        ("100.127.255.255", K.SHARED),
        ("::ffff:100.64.1.1", K.SHARED),
        # link-local
        ("169.254.1.1", K.LINK_LOCAL),
        ("fe80::1", K.LINK_LOCAL),
        ("fe80::1%eth0", K.LINK_LOCAL),
        ("::ffff:169.254.10.10", K.LINK_LOCAL),
        # metadata
        ("169.254.169.254", K.METADATA),
        ("169.254.170.2", K.METADATA),
        ("100.100.100.200", K.METADATA),
        ("fd00:ec2::254", K.METADATA),
        ("::ffff:169.254.169.254", K.METADATA),
        ("::ffff:a9fe:a9fe", K.METADATA),
        ("64:ff9b::a9fe:a9fe", K.METADATA),
        # multicast and broadcast
        ("224.0.0.1", K.MULTICAST),
        ("239.255.255.250", K.MULTICAST),
        ("255.255.255.255", K.MULTICAST),
        ("ff02::1", K.MULTICAST),
        ("ff05::1:3", K.MULTICAST),
        # unspecified
        ("0.0.0.0", K.UNSPECIFIED),
        ("::", K.UNSPECIFIED),
        ("::ffff:0.0.0.0", K.UNSPECIFIED),
        # reserved, documentation, tunnels, benchmarking
        ("0.1.2.3", K.RESERVED),
        ("192.0.0.8", K.RESERVED),
        ("192.0.2.1", K.RESERVED),
        ("198.18.0.1", K.RESERVED),
        ("198.51.100.7", K.RESERVED),
        ("203.0.113.9", K.RESERVED),
        ("240.0.0.1", K.RESERVED),
        ("2001:db8::1", K.RESERVED),
        ("3fff::1", K.RESERVED),
        ("2001::1", K.RESERVED),  # Teredo
        ("::127.0.0.1", K.RESERVED),  # deprecated IPv4-compatible
        ("::ffff:0:7f00:1", K.RESERVED),  # IPv4-translated
        ("100::1", K.RESERVED),  # discard-only
        ("4000::1", K.RESERVED),  # outside 2000::/3
    ],
)
def test_classify(address: str, kind: AddressKind) -> None:
    assert classify(address) is kind
    assert classify(ipaddress.ip_address(address)) is kind


def test_classify_rejects_non_addresses() -> None:
    with pytest.raises(ValueError):
        classify("localhost")


@pytest.mark.parametrize(
    ("kind", "strict", "dev"),
    [
        (K.PUBLIC, True, True),
        (K.LOOPBACK, False, True),
        (K.PRIVATE, False, True),
        (K.SHARED, False, True),
        (K.LINK_LOCAL, False, True),
        (K.METADATA, False, False),
        (K.MULTICAST, False, False),
        (K.UNSPECIFIED, False, False),
        (K.RESERVED, False, False),
    ],
)
def test_allow_private_opens_only_what_a_dev_receiver_needs(
    kind: AddressKind, strict: bool, dev: bool
) -> None:
    assert STRICT.allows(kind) is strict
    assert DEV.allows(kind) is dev


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/resguardo",
        "https://hooks.example.com:443/x?tenant=a",
        "https://hooks.example.com:8443/",
        "https://hooks.example.com:65535/",
        "https://HOOKS.Example.COM./x",
        "https://bücher.example/hook",
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://under_score.example.com/",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert STRICT.check_url(url).scheme == "https"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/", "must use https"),
        ("ftp://hooks.example.com/", "must use https"),
        ("file:///etc/passwd", "must use https"),
        ("gopher://hooks.example.com/", "must use https"),
        ("hooks.example.com/path", "must use https"),
        ("https:///path", "no host"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://hooks.example.com:22/", "port 22"),
        ("https://hooks.example.com:25/", "port 25"),
        ("https://hooks.example.com:80/", "port 80"),
        ("https://hooks.example.com:0/", "port 0"),
        ("https://hooks.example.com:99999/", "could not be parsed|out of range"),
        ("https://hooks.example.com:http/", "could not be parsed|not a number"),
        ("https://intranet/", "single-label"),
        ("https://localhost/", "single-label"),
        ("https://api.localhost/", "special-use"),
        ("https://printer.local/", "special-use"),
        ("https://metadata.google.internal/", "special-use"),
        ("https://router.home.arpa/", "special-use"),
        ("https://2130706433/", "non-standard form"),
        ("https://127.1/", "non-standard form"),
        ("https://0x7f.0x1/", "non-standard form"),
        ("https://bad..example.com/", "not a valid host name"),
        ("https://-bad.example.com/", "not a valid host name"),
        ("https://hooks.example.com\\@127.0.0.1/", "'\\\\'"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com/\r\nHost: x", "whitespace"),
        ("https://hooks.example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_refused_urls(url: str, why: str) -> None:
    with pytest.raises(URLRefused, match=why):
        STRICT.check_url(url)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://127.0.0.1/", K.LOOPBACK),
        ("https://[::1]/", K.LOOPBACK),
        ("https://[::ffff:127.0.0.1]/", K.LOOPBACK),
        ("https://10.1.2.3:8443/", K.PRIVATE),
        ("https://169.254.169.254/latest/meta-data/", K.METADATA),
        ("https://[fd00:ec2::254]/", K.METADATA),
        ("https://[::ffff:169.254.169.254]/", K.METADATA),
        ("https://100.64.0.1/", K.SHARED),
        ("https://0.0.0.0/", K.UNSPECIFIED),
        ("https://[fe80::1]/", K.LINK_LOCAL),
    ],
)
def test_ip_literal_urls_are_classified_at_registration(url: str, kind: AddressKind) -> None:
    with pytest.raises(AddressRefused) as caught:
        STRICT.check_url(url)
    assert caught.value.kinds == (kind,)
    assert kind.value in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@hooks.example.com/",
        "https://user@hooks.example.com/",
        "https://:hunter2@hooks.example.com/",
        "https://@hooks.example.com/",
        "https://user:hunter2@127.0.0.1/",
        "http://user:hunter2@localhost:8080/",
    ],
)
def test_userinfo_is_refused_and_never_echoed(url: str) -> None:
    for policy in (STRICT, DEV):
        with pytest.raises(URLRefused, match="credentials") as caught:
            policy.check_url(url)
        assert "hunter2" not in str(caught.value)
        assert "user" not in str(caught.value).replace("user:password", "")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost:9000/",
        "http://receiver/",  # a compose service name
        "https://receiver.local:80/",
        "http://192.168.1.20/",
        "http://[::1]:8080/",
        "https://hooks.example.com:22/",
    ],
)
def test_allow_private_accepts_dev_targets(url: str) -> None:
    DEV.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:8080/",
        "http://224.0.0.1/",
        "http://127.1:8080/",
        "ftp://127.0.0.1/",
    ],
)
def test_allow_private_still_refuses(url: str) -> None:
    with pytest.raises(TargetRefused):
        DEV.check_url(url)
