"""TrustedProxies: who may tell us the visitor's address."""

from __future__ import annotations

import pytest

from gateway.http.forwarded import UNKNOWN_CLIENT, TrustedProxies, address_text, parse_ip

LOOPBACK = TrustedProxies()
LAN = TrustedProxies(["10.0.0.0/8", "192.168.1.1/32", "fd00::/8"])


@pytest.mark.parametrize(
    ("proxies", "peer", "trusted"),
    [
        pytest.param(LOOPBACK, "127.0.0.1", True, id="v4-loopback"),
        pytest.param(LOOPBACK, "127.8.9.10", True, id="v4-loopback-range"),
        pytest.param(LOOPBACK, "::1", True, id="v6-loopback"),
        pytest.param(LOOPBACK, "::ffff:127.0.0.1", True, id="v4-mapped-loopback"),
        pytest.param(LOOPBACK, "10.0.0.1", False, id="lan-not-default"),
        pytest.param(LOOPBACK, None, False, id="no-peer"),
        pytest.param(LOOPBACK, "", False, id="empty"),
        pytest.param(LOOPBACK, "localhost", False, id="hostname"),
        pytest.param(LAN, "10.200.0.1", True, id="lan-range"),
        pytest.param(LAN, "192.168.1.1", True, id="single-host"),
        pytest.param(LAN, "192.168.1.2", False, id="neighbour-of-single-host"),
        pytest.param(LAN, "fd12::1", True, id="v6-ula"),
        pytest.param(LAN, "127.0.0.1", False, id="loopback-not-configured"),
        pytest.param(TrustedProxies([]), "127.0.0.1", False, id="trust-nobody"),
    ],
)
def test_is_trusted(proxies: TrustedProxies, peer: str | None, trusted: bool) -> None:
    assert proxies.is_trusted(peer) is trusted


@pytest.mark.parametrize(
    ("proxies", "peer", "xff", "client"),
    [
        pytest.param(LOOPBACK, "203.0.113.7", None, "203.0.113.7", id="direct-no-header"),
        pytest.param(
            LOOPBACK, "203.0.113.7", "1.2.3.4", "203.0.113.7", id="untrusted-peer-header-ignored"
        ),
        pytest.param(LOOPBACK, "127.0.0.1", None, "127.0.0.1", id="trusted-peer-no-header"),
        pytest.param(LOOPBACK, "127.0.0.1", "", "127.0.0.1", id="trusted-peer-empty-header"),
        pytest.param(LOOPBACK, "127.0.0.1", "198.51.100.9", "198.51.100.9", id="one-hop"),
        pytest.param(
            LOOPBACK,
            "127.0.0.1",
            "6.6.6.6, 198.51.100.9",
            "198.51.100.9",
            id="spoofed-left-entry-ignored",
        ),
        pytest.param(
            LAN,
            "10.0.0.2",
            "6.6.6.6, 198.51.100.9, 10.0.0.5, 192.168.1.1",
            "198.51.100.9",
            id="skips-trusted-chain",
        ),
        pytest.param(LAN, "10.0.0.2", "10.1.1.1, 10.0.0.5", "10.1.1.1", id="all-trusted-leftmost"),
        pytest.param(
            LAN,
            "10.0.0.2",
            "198.51.100.9, garbage, 10.0.0.5",
            "10.0.0.5",
            id="malformed-stops-walk",
        ),
        pytest.param(
            LOOPBACK, "127.0.0.1", "garbage", "127.0.0.1", id="malformed-only-hop-gives-peer"
        ),
        pytest.param(LOOPBACK, "127.0.0.1", "1.2.3.4, ,", "1.2.3.4", id="empty-elements-skipped"),
        pytest.param(LOOPBACK, "127.0.0.1", "198.51.100.9:4711", "198.51.100.9", id="v4-with-port"),
        pytest.param(
            LOOPBACK,
            "127.0.0.1",
            "[2001:db8::1]:4711",
            "2001:db8::1",
            id="bracketed-v6-with-port",
        ),
        pytest.param(LOOPBACK, "127.0.0.1", "2001:DB8:0::1", "2001:db8::1", id="v6-canonical"),
        pytest.param(LOOPBACK, "127.0.0.1", '"198.51.100.9"', "198.51.100.9", id="quoted"),
        pytest.param(
            LOOPBACK, "::ffff:127.0.0.1", "198.51.100.9", "198.51.100.9", id="v4-mapped-peer"
        ),
        pytest.param(LOOPBACK, "127.0.0.1", "[2001:db8::1", "127.0.0.1", id="unclosed-bracket"),
        pytest.param(LOOPBACK, "127.0.0.1", "1.2.3.4:x", "127.0.0.1", id="bad-port"),
        pytest.param(LOOPBACK, "127.0.0.1", "1" * 500, "127.0.0.1", id="huge-entry"),
        pytest.param(
            LOOPBACK,
            "127.0.0.1",
            ", ".join(["127.0.0.1"] * 1000),
            "127.0.0.1",
            id="very-long-trusted-chain",
        ),
        pytest.param(LOOPBACK, None, "1.2.3.4", UNKNOWN_CLIENT, id="no-ip-peer"),
        pytest.param(TrustedProxies([]), "127.0.0.1", "1.2.3.4", "127.0.0.1", id="trust-nobody"),
    ],
)
def test_client_address(
    proxies: TrustedProxies, peer: str | None, xff: str | None, client: str
) -> None:
    assert proxies.client_address(peer, xff) == client


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param(" 1.2.3.4 ", "1.2.3.4", id="whitespace"),
        pytest.param("fe80::1%eth0", "fe80::1", id="zone-dropped"),
        pytest.param("[::1]", "::1", id="brackets-no-port"),
        pytest.param("[::1]x", None, id="junk-after-bracket"),
        pytest.param("1.2.3", None, id="short-v4"),
        pytest.param("unknown", None, id="rfc7239-unknown"),
        pytest.param("_hidden", None, id="obfuscated-node"),
    ],
)
def test_parse_ip(text: str, parsed: str | None) -> None:
    address = parse_ip(text)
    assert (str(address) if address is not None else None) == parsed


@pytest.mark.parametrize(
    "text",
    [
        None,
        "127.0.0.1",
        " 1.2.3.4 ",
        "1.2.3.4:8080",
        "::ffff:10.0.0.1",  # IPv4-mapped: written as IPv4
        "[2001:DB8::1]:443",  # upper case: written canonically
        "fe80::1%eth0",
        "1.2.3",
        "unknown",
        "",
        " " * 200 + "1.2.3.4",  # too long to be remembered, still read
        "x" * 300,
    ],
)
def test_address_text_is_the_parsed_address_written_out(text: str | None) -> None:
    address = parse_ip(text)
    expected = UNKNOWN_CLIENT if address is None else str(address)
    assert address_text(text) == expected
    assert address_text(text) == expected  # and the same when remembered


def test_invalid_network_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an IP network: 'nonsense'"):
        TrustedProxies(["nonsense"])


def test_host_bits_are_tolerated() -> None:
    assert TrustedProxies(["10.1.2.3/8"]).is_trusted("10.9.9.9")
