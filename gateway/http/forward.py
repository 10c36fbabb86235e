"""What an allowed request carries on to whatever serves it, and what its answer carries back.

The same rules for every driver: the reverse proxy's upstream, and the publisher's own app
behind the ASGI or WSGI middleware. Every request header name is compared as
:func:`~gateway.http.names.header_name` reads it (lower case, ``_`` as ``-``): CGI and WSGI
upstreams (PHP, Flask, Django) read ``X_Paywall_Access`` as ``HTTP_X_PAYWALL_ACCESS``, the same
variable as ``X-Paywall-Access``, so a spelling the gateway does not strip would pose as the
gateway's own header.

Never passed on, from anyone: any ``X-Paywall-*`` (the decision goes in the gateway's own);
headers an upstream may route or dispatch by instead of the request line
(:data:`ROUTING_OVERRIDE_HEADERS`); the visitor's session credentials unless
``forward_session_token``; a transfer token in the ``Referer``. From peers that are not
trusted proxies also every ``X-Forwarded-*`` and the address claims in
:data:`PROXY_ASSERTED_HEADERS` (an ``X-Forwarded-*`` spelled with ``_`` goes from anyone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multidict import CIMultiDict

from gateway.http.credentials import Headers, bearer_token, strip_session_cookie
from gateway.http.forwarded import address_text
from gateway.http.names import header_name, param_name

__all__ = [
    "HOP_BY_HOP_HEADERS",
    "PROXY_ASSERTED_HEADERS",
    "ROUTING_OVERRIDE_HEADERS",
    "add_forwarded",
    "connection_tokens",
    "forward_headers",
    "last_element",
    "private_cache_control",
    "private_response_headers",
    "strip_query_param",
    "strip_token_from_url",
]

# RFC 9110 section 7.6.1, plus the non-standard Proxy-Connection that old clients still send.
HOP_BY_HOP_HEADERS: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the reverse proxy itself (Host comes from the upstream URL); Expect is handled by the
# gateway's own server, the upstream never sees a 100-continue handshake.
_REPLACED_BY_PROXY = frozenset(
    {"host", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
)
# Headers some upstream frameworks route or dispatch by, in place of the request line: IIS and
# Symfony (X-Original-URL, X-Rewrite-URL), nginx subrequests (X-Original-URI / -Method), Traefik
# (X-Forwarded-Uri / -Method), method overrides (Express, Symfony, Laravel, ASP.NET). The
# decision was made for the request line; a header that moves the request elsewhere must not
# arrive, from anyone.
ROUTING_OVERRIDE_HEADERS: frozenset[str] = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-original-method",
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
# Only believed from a trusted proxy (with every other X-Forwarded-*); from anyone else they are
# the visitor's inventions about their address or the site's.
PROXY_ASSERTED_HEADERS: frozenset[str] = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-original-forwarded-for",
        "x-original-host",
        "x-host",
    }
)
_FORWARDED_PREFIX = "x-forwarded-"
_PAYWALL_PREFIX = "x-paywall-"
_SHARED_CACHE_DIRECTIVES = frozenset({"public", "s-maxage", "proxy-revalidate"})


def forward_headers(
    incoming: Iterable[tuple[str, str]],
    decision: Mapping[str, str],
    *,
    peer_trusted: bool,
    session_cookie: str,
    session_header: str,
    transfer_param: str,
    forward_session_token: bool,
    proxy: bool,
) -> CIMultiDict[str]:
    """The request headers for whatever serves an allowed request, ``decision`` (the gateway's
    ``X-Paywall-*``) added last.

    ``proxy``: for a reverse proxy's upstream, which also loses hop-by-hop headers (and those
    ``Connection`` names) and the ones the proxy sets itself (Host, Expect, X-Forwarded-For /
    -Proto / -Host); an in-process app behind middleware keeps those, its server handled them.
    """
    pairs = list(incoming)
    dropped = set(ROUTING_OVERRIDE_HEADERS)
    if proxy:
        connection = [value for name, value in pairs if header_name(name) == "connection"]
        dropped |= HOP_BY_HOP_HEADERS | connection_tokens(connection) | _REPLACED_BY_PROXY
    if not peer_trusted:
        dropped |= PROXY_ASSERTED_HEADERS
    session_key = header_name(session_header)

    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs:
        key = header_name(name)
        if key in dropped or key.startswith(_PAYWALL_PREFIX):
            continue
        if key.startswith(_FORWARDED_PREFIX) and (not peer_trusted or "_" in name):
            continue  # a proxy spells them with "-": "_" is someone posing as one
        if key == "referer":
            value = strip_token_from_url(value, transfer_param)
        elif not forward_session_token:
            if key == session_key:
                continue
            if key == "authorization" and bearer_token(value) is not None:
                continue
            if key == "cookie":
                value = strip_session_cookie(value, session_cookie)
                if not value:
                    continue
        headers.add(name, value)
    for name, value in decision.items():
        headers[name] = value
    return headers


def connection_tokens(values: Iterable[str]) -> set[str]:
    """The header names listed in ``Connection`` values, as header_name() spells them."""
    tokens: set[str] = set()
    for value in values:
        tokens.update(header_name(token.strip()) for token in value.split(",") if token.strip())
    return tokens


def last_element(values: list[str]) -> str | None:
    """The value the nearest proxy wrote into a list-valued header, if any."""
    for value in reversed(values):
        elements = [element.strip() for element in value.split(",") if element.strip()]
        if elements:
            return elements[-1]
    return None


def private_cache_control(values: list[str]) -> str:
    """The upstream's Cache-Control (all its header lines) for an answer only this visitor may
    see: what lets a shared cache (a CDN in front of the gateway) store it goes (``public``,
    ``s-maxage``, ``proxy-revalidate``), and ``private`` is added unless ``private`` or
    ``no-store`` is already there. The browser's own caching (``max-age`` …) is kept."""
    kept = []
    for value in values:
        for directive in value.split(","):
            directive = directive.strip()
            name = directive.partition("=")[0].strip().lower()
            if directive and name not in _SHARED_CACHE_DIRECTIVES:
                kept.append(directive)
    names = {directive.partition("=")[0].strip().lower() for directive in kept}
    if not names & {"private", "no-store"}:
        kept.insert(0, "private")
    return ", ".join(kept)


def private_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Response headers with their Cache-Control made private (:func:`private_cache_control`)."""
    pairs = list(headers)
    cache_control = [value for name, value in pairs if name.lower() == "cache-control"]
    kept = [(name, value) for name, value in pairs if name.lower() != "cache-control"]
    kept.append(("Cache-Control", private_cache_control(cache_control)))
    return kept


def strip_query_param(query: str, name: str) -> str:
    """``query`` (raw, still percent-encoded) without any ``name`` parameter.

    Everything else is kept byte for byte, in order. Names compare after percent- and
    plus-decoding and case-insensitively, so no spelling of the parameter slips through; a
    ``&``-part that hides the name behind a ``;`` (which some frameworks also split on) is
    dropped whole.
    """
    if not query:
        return query
    wanted = name.casefold()

    def names(part: str) -> list[str]:
        return [param_name(piece) for piece in part.split(";")]

    return "&".join(part for part in query.split("&") if wanted not in names(part))


def strip_token_from_url(url: str, param: str) -> str:
    """``url`` (a Referer) without the ``param`` query parameter."""
    before, sep, query = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = query.partition("#")
    query = strip_query_param(query, param)
    return before + ("?" + query if query else "") + hash_sep + fragment


def add_forwarded(
    headers: CIMultiDict[str],
    incoming: Headers,
    *,
    peer: str | None,
    scheme: str,
    peer_trusted: bool,
) -> None:
    """The reverse proxy's own X-Forwarded-For / -Proto / -Host: the chain a trusted proxy
    wrote plus the peer, and the scheme and host it names (else the connection's own)."""
    peer_text = address_text(peer)
    chain = ", ".join(incoming.getall("X-Forwarded-For", ())) if peer_trusted else ""
    chain = chain.strip().strip(",").strip()
    headers["X-Forwarded-For"] = f"{chain}, {peer_text}" if chain else peer_text
    proto = last_element(incoming.getall("X-Forwarded-Proto", [])) if peer_trusted else None
    headers["X-Forwarded-Proto"] = proto or scheme
    host = last_element(incoming.getall("X-Forwarded-Host", [])) if peer_trusted else None
    host = host or incoming.get("Host")
    if host:
        headers["X-Forwarded-Host"] = host
