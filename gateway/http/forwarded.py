"""Which peers may tell us who the visitor is.

``X-Forwarded-For`` is only as honest as whoever wrote it. The peer of a TCP connection is the one
address nobody can fake, so a hop is believed only when the peer that handed it over is one of
the configured proxies. Walking the header from the right and skipping trusted proxies finds the
first address that a proxy of ours saw and that is not a proxy of ours: the visitor. Anything
further left was written by the visitor and is ignored. This is nginx's ``real_ip_recursive on``
(and Werkzeug's ``ProxyFix`` with addresses instead of a hop count).

Pure: no I/O, no aiohttp, so the front-ends (proxy, auth endpoint, ASGI, WSGI) share it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

__all__ = [
    "DEFAULT_TRUSTED_PROXIES",
    "UNKNOWN_CLIENT",
    "TrustedProxies",
    "address_text",
    "parse_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PROXIES: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

# What a client address is when there is none (a Unix socket peer): RFC 7239's "unknown".
UNKNOWN_CLIENT = "unknown"

# An X-Forwarded-For header is bounded by the server's header size limit anyway; this only keeps
# a pathological one from costing more than a few dozen address parses.
_MAX_HOPS = 64
_MAX_REMEMBERED_PEERS = 4096


def parse_ip(value: str | None) -> IPAddress | None:
    """An address as a proxy may write it, or ``None`` if it is not one (:func:`_parse_ip`).

    Addresses repeat (the peer is the same nginx all day), and parsing one costs microseconds:
    short values are remembered (bounded; addresses are no secret, the results immutable)."""
    if value is None:
        return None
    if len(value) <= _REMEMBERED_ADDRESS_LENGTH:
        return _remembered_ip(value)
    return _parse_ip(value)


_REMEMBERED_ADDRESS_LENGTH = 128


def _parse_ip(value: str) -> IPAddress | None:
    """An address as a proxy may write it, or ``None`` if it is not one.

    Accepted beyond a bare address, because real proxies write them: surrounding whitespace,
    ``[v6]`` brackets, a ``:port`` suffix on IPv4 or bracketed IPv6, and surrounding double
    quotes. IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``) become plain IPv4, so a rule for
    ``10.0.0.0/8`` matches them too. Zone identifiers (``fe80::1%eth0``) are dropped.
    """
    text = value.strip().strip('"')
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _is_port(text[end + 1 :])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_remembered_ip = functools.lru_cache(maxsize=4096)(_parse_ip)


def address_text(value: str | None) -> str:
    """The canonical text of the address ``value`` (``str`` of :func:`parse_ip`'s answer), or
    :data:`UNKNOWN_CLIENT` when it is not one. Remembered for short values as :func:`parse_ip`
    is: writing an address out is an interpreted call of :mod:`ipaddress`, a microsecond or
    two, and a reverse proxy writes its peer's on every request (``X-Forwarded-For``)."""
    if value is None:
        return UNKNOWN_CLIENT
    if len(value) <= _REMEMBERED_ADDRESS_LENGTH:
        return _remembered_text(value)
    return _address_text(value)


def _address_text(value: str) -> str:
    address = _parse_ip(value)
    return UNKNOWN_CLIENT if address is None else str(address)


_remembered_text = functools.lru_cache(maxsize=4096)(_address_text)


def _is_port(suffix: str) -> bool:
    return suffix.startswith(":") and suffix[1:].isdigit()


class TrustedProxies:
    """The proxies whose ``X-Forwarded-*`` headers we believe, as CIDR networks.

    The default trusts loopback only: a reverse proxy on the same host. ``TrustedProxies([])``
    trusts nobody, so the TCP peer is always the client.
    """

    def __init__(self, networks: Iterable[str] = DEFAULT_TRUSTED_PROXIES) -> None:
        parsed: list[IPNetwork] = []
        for network in networks:
            try:
                parsed.append(ipaddress.ip_network(network.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"not an IP network: {network!r} ({exc})") from None
        self._networks: tuple[IPNetwork, ...] = tuple(parsed)
        # Peer address -> verdict: every request asks about its peer, and parsing an address
        # costs more than the rest of the check. Bounded: cleared when full.
        self._verdicts: dict[str | None, bool] = {}

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        return self._networks

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"

    def _trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def is_trusted(self, peer_ip: str | None) -> bool:
        """Whether ``peer_ip`` (the TCP peer, or one hop of a chain) is one of our proxies.

        ``None`` (no IP peer, e.g. a Unix socket) and anything unparsable are never trusted.
        """
        verdict = self._verdicts.get(peer_ip)
        if verdict is None:
            address = parse_ip(peer_ip)
            verdict = address is not None and self._trusts(address)
            if len(self._verdicts) >= _MAX_REMEMBERED_PEERS:
                self._verdicts.clear()
            self._verdicts[peer_ip] = verdict
        return verdict

    def client_address(self, peer_ip: str | None, x_forwarded_for: str | None) -> str:
        """The visitor's address, given the TCP peer and the ``X-Forwarded-For`` it sent.

        * untrusted peer: the peer itself, whatever the header says;
        * trusted peer: walk the header right to left, skipping trusted proxies; the first
          untrusted address is the visitor;
        * every hop trusted: the leftmost one (the visitor is one of our own hosts);
        * a malformed hop stops the walk: whatever stands left of it cannot be attributed to a
          proxy of ours, so the answer is the last address a trusted hop vouched for (as nginx).

        Several ``X-Forwarded-For`` header lines must be joined with ``", "`` by the caller, in
        order. Addresses come back in canonical form (``str(ipaddress.ip_address(...))``); a
        peer that is not an IP address at all comes back as :data:`UNKNOWN_CLIENT`.
        """
        peer = parse_ip(peer_ip)
        if peer is None:
            return UNKNOWN_CLIENT
        current = peer
        if not self._trusts(current) or not x_forwarded_for:
            return str(current)
        hops = x_forwarded_for.split(",")
        for hop in reversed(hops[-_MAX_HOPS:]):
            if not hop.strip():
                continue  # "a,,b" and trailing commas: empty list elements are no hops
            address = parse_ip(hop)
            if address is None:
                return str(current)
            current = address
            if not self._trusts(current):
                return str(current)
        return str(current)
