"""Requests the gateway and the server beside it could read two ways, through every front-end.

Three classes, each run through proxy mode, the auth endpoint (``/_paywall/auth`` asked
directly, as nginx / Traefik / Caddy do) and the real nginx with both shipped configurations:

* credentials that can be read two ways: the session cookie named twice (empty or not, on one
  Cookie line or two, after a comma, in another case or spelling), the session header or
  ``Authorization`` given twice, a credential header spelled with ``_``. nginx's cache key once
  took the first ``paywall_session`` cookie while the gateway took the non-empty one, which
  stored a subscriber's grant under the anonymous key: each spelling is refused, and an
  anonymous visitor asking for the same page afterwards is never granted;
* ``;`` path parameters (``/premium;x/a``), which Tomcat / Jetty / Spring serve as
  ``/premium/a`` while the rules read a segment of its own: refused unless
  ``allow_path_parameters``, and then matched and forwarded as the same bytes;
* request headers an upstream reads as the gateway's own (``X_Paywall_Access`` is
  ``HTTP_X_PAYWALL_ACCESS`` to CGI / WSGI) or routes by (``X-Original-URL``, method overrides):
  they never reach the content server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from tests.deploy.test_nginx import BOTH_CONFIGS, CACHED_CONFIG, HOST, PLAIN, StartSite
from tests.web.conftest import StartStack

Lines = Sequence[tuple[str, str]]

# Each is a set of header lines carrying the subscriber's valid session in a way that can be read
# two ways. The gateway must refuse every one of them.
AMBIGUOUS_CREDENTIALS = [
    pytest.param([("Cookie", f"paywall_session=; paywall_session={PLAIN}")], id="empty-first"),
    pytest.param([("Cookie", f"paywall_session={PLAIN}; paywall_session=")], id="empty-last"),
    pytest.param(
        [("Cookie", "paywall_session="), ("Cookie", f"paywall_session={PLAIN}")],
        id="two-cookie-lines",
    ),
    pytest.param(
        [("Cookie", f"paywall_session={PLAIN}"), ("Cookie", f"paywall_session={PLAIN}")],
        id="same-value-on-two-lines",
    ),
    pytest.param(
        [("Cookie", f"paywall_session={PLAIN}; paywall_session={PLAIN}")], id="same-value-twice"
    ),
    pytest.param([("Cookie", f"PAYWALL_SESSION=; paywall_session={PLAIN}")], id="upper-case"),
    pytest.param([("Cookie", f"x=1, paywall_session=; paywall_session={PLAIN}")], id="comma"),
    pytest.param([("Cookie", f"paywall_session= ; paywall_session={PLAIN}")], id="space-value"),
    pytest.param([("Cookie", f"paywall_session; paywall_session={PLAIN}")], id="name-only"),
    pytest.param([("Cookie", f"paywall%5Fsession=; paywall_session={PLAIN}")], id="encoded"),
    pytest.param([("Cookie", f"paywall_session =; paywall_session={PLAIN}")], id="space-name"),
    pytest.param([("Cookie", f"PAYWALL_SESSION={PLAIN}")], id="only-another-case"),
    pytest.param([("Cookie", f"paywall_session={PLAIN}, x=1")], id="comma-in-value"),
    pytest.param(
        [("X-plenigo-customer-session", PLAIN), ("X-plenigo-customer-session", PLAIN)],
        id="session-header-twice",
    ),
    pytest.param(
        [("X-plenigo-customer-session", "x"), ("X-plenigo-customer-session", PLAIN)],
        id="session-header-two-values",
    ),
    pytest.param(
        [("Authorization", f"Bearer {PLAIN}"), ("Authorization", f"Bearer {PLAIN}")],
        id="bearer-twice",
    ),
    pytest.param(
        [("Authorization", "Basic eDp5"), ("Authorization", f"Bearer {PLAIN}")],
        id="basic-then-bearer",
    ),
]
# Underscore spellings: nginx drops such headers (underscores_in_headers off), so behind nginx
# they are simply absent; the gateway asked directly refuses them.
UNDERSCORE_CREDENTIALS = [
    pytest.param([("X_plenigo_customer_session", PLAIN)], id="session-header-underscore"),
    pytest.param(
        [("X_plenigo_customer_session", PLAIN), ("X-plenigo-customer-session", PLAIN)],
        id="session-header-both-spellings",
    ),
]

# Still one reading: accepted.
CLEAR_CREDENTIALS = [
    pytest.param([("Cookie", f"a=1; paywall_session={PLAIN}; b=2")], id="among-other-cookies"),
    pytest.param([("Cookie", "a=1"), ("Cookie", f"paywall_session={PLAIN}")], id="two-lines"),
    pytest.param([("Cookie", f'paywall_session="{PLAIN}"')], id="quoted"),
    pytest.param([("Authorization", f"bearer   {PLAIN}")], id="bearer-any-case"),
    pytest.param(
        [("Cookie", "paywall_session="), ("Authorization", f"Bearer {PLAIN}")],
        id="cleared-cookie-then-bearer",
    ),
]

PATH_PARAMETERS = [
    "/premium;x/a",
    "/premium;/a",
    "/premium;jsessionid=1/a",
    "/premium/a;x",
    "/news;x/../premium/a",
    "/news/..;/premium/a",
]

# Header names an upstream could take for the gateway's own or route by. Every one must be gone
# by the time the request reaches the content server, compared as CGI reads names.
SPOOFED_HEADERS = [
    ("X_Paywall_Customer_Id", "999999"),
    ("X_Paywall_Access", "granted"),
    ("x_paywall_cache", "hit"),
    ("X-Paywall-Anything", "x"),
    ("X-Rewrite-URL", "/premium/a"),
    ("X-Original-URL", "/premium/a"),
    ("X-Original-URI", "/premium/a"),
    ("X-Original-Method", "GET"),
    ("X-Forwarded-Uri", "/premium/a"),
    ("X-Forwarded-Method", "GET"),
    ("X-HTTP-Method-Override", "GET"),
    ("X-HTTP-Method", "GET"),
    ("X-Method-Override", "GET"),
    ("X_Original_URL", "/premium/a"),
    ("X_HTTP_Method_Override", "GET"),
    ("X_Forwarded_Host", "evil.example"),
]
GATEWAY_SET = {"x-paywall-access", "x-paywall-cache", "x-paywall-customer-id"}


def cgi_name(name: str) -> str:
    return name.lower().replace("_", "-")


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    text: str


async def send(
    http: aiohttp.ClientSession, url: str, lines: Lines = (), *, host: str | None = None
) -> Answer:
    """One GET with exactly these header lines (repeated names stay separate lines)."""
    headers: CIMultiDict[str] = CIMultiDict(lines)
    if host is not None:
        headers["Host"] = host
    async with http.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as r:
        return Answer(r.status, CIMultiDict(r.headers), await r.text())


def premium_requests(requests: list[dict[str, Any]]) -> list[str]:
    return [seen["path_qs"] for seen in requests if "premium" in seen["path_qs"]]


# --- credentials --------------------------------------------------------------------------------


@pytest.mark.parametrize("lines", AMBIGUOUS_CREDENTIALS + UNDERSCORE_CREDENTIALS)
async def test_proxy_mode_refuses_a_credential_read_two_ways(
    start_stack: StartStack, lines: Lines
) -> None:
    stack = await start_stack()
    reply = await send(stack.http, stack.url("/premium/a"), lines)
    assert reply.status == 400, reply.text
    # A public page too: the credentials are read (and refused) before the route.
    assert (await send(stack.http, stack.url("/news"), lines)).status == 400
    assert stack.content_requests == []


@pytest.mark.parametrize("lines", AMBIGUOUS_CREDENTIALS + UNDERSCORE_CREDENTIALS)
async def test_auth_endpoint_refuses_a_credential_read_two_ways(
    start_stack: StartStack, lines: Lines
) -> None:
    stack = await start_stack(server={"mode": "auth_request"})
    asked = [*lines, ("X-Original-URI", "/premium/a"), ("X-Original-Method", "GET")]
    reply = await send(stack.http, stack.url("/_paywall/auth"), asked)
    assert reply.status == 403
    assert reply.headers["X-Paywall-Access"] == "bad_request"
    assert reply.headers["X-Accel-Expires"] == "0"
    assert "X-Paywall-Customer-Id" not in reply.headers


@pytest.mark.parametrize("lines", CLEAR_CREDENTIALS)
async def test_a_credential_with_one_reading_still_passes(
    start_stack: StartStack, lines: Lines
) -> None:
    stack = await start_stack()
    reply = await send(stack.http, stack.url("/premium/a"), lines)
    assert reply.status == 200, reply.text
    assert stack.content_requests[-1]["headers"]["X-Paywall-Customer-Id"] == "100001"
    # The session cookie stays at the gateway, in whatever spelling it came.
    forwarded = stack.content_requests[-1]["headers"].get("Cookie", "")
    assert "paywall_session" not in forwarded.lower()


async def test_proxy_mode_strips_every_spelling_of_the_session_cookie(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    lines = [("Cookie", f"a=1; paywall_session={PLAIN}"), ("Cookie", "paywall_session=; b=2")]
    assert (await send(stack.http, stack.url("/news"), lines)).status == 400
    one = [("Cookie", f"a=1; paywall_session={PLAIN}; b=2")]
    assert (await send(stack.http, stack.url("/news"), one)).status == 200
    assert stack.content_requests[-1]["headers"]["Cookie"] == "a=1; b=2"


@BOTH_CONFIGS
async def test_nginx_never_serves_a_grant_read_two_ways(start_site: StartSite, config: str) -> None:
    """The probe's finding: a subscriber's ambiguous cookie must not put a grant under a key
    that an anonymous visitor (or the "first reading" of the cookie) then hits."""
    site = await start_site(config)
    base = f"http://127.0.0.1:{site.nginx.port}"
    # The test can see a grant: a clean subscriber is granted, and stored (cached variant).
    clean = await send(
        site.http, f"{base}/premium/clean", [("Cookie", f"paywall_session={PLAIN}")], host=HOST
    )
    assert clean.status == 200
    assert "100001" in clean.text

    cases: list[Any] = [*AMBIGUOUS_CREDENTIALS]
    for number, case in enumerate(cases):
        lines, name = case.values[0], case.id
        page = f"{base}/premium/{number}"
        for attempt in range(2):  # the second would be the one served from nginx's cache
            reply = await send(site.http, page, lines, host=HOST)
            assert reply.status == 400, (name, attempt, reply.status, reply.text[:200])
        anonymous = await send(site.http, page, host=HOST)
        assert anonymous.status == 303, (name, anonymous.status)
        # Whatever nginx's own reading of the cookie was, as a visitor's only cookie.
        for first_reading in ("paywall_session=", "PAYWALL_SESSION=", "x=1"):
            other = await send(site.http, page, [("Cookie", first_reading)], host=HOST)
            assert other.status in (303, 400), (name, first_reading, other.status)
    assert premium_requests(site.content_requests) == ["/premium/clean"]


@BOTH_CONFIGS
async def test_nginx_drops_underscore_credential_headers(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    base = f"http://127.0.0.1:{site.nginx.port}"
    for case in UNDERSCORE_CREDENTIALS:
        lines = [(name, value) for name, value in case.values[0] if "_" in name]
        reply = await send(site.http, f"{base}/premium/a", lines, host=HOST)
        assert reply.status == 303, (case.id, reply.status)
    assert premium_requests(site.content_requests) == []


async def test_cached_grant_is_keyed_by_every_cookie_byte(start_site: StartSite) -> None:
    """A grant stored for one Cookie header is not served to a visitor whose Cookie header
    holds the same other cookies without the session, or the session in another place."""
    site = await start_site(CACHED_CONFIG)
    base = f"http://127.0.0.1:{site.nginx.port}"
    subscriber = [("Cookie", f"a=1; paywall_session={PLAIN}")]
    for _ in range(2):
        assert (await send(site.http, f"{base}/premium/a", subscriber, host=HOST)).status == 200
    assert [seen["headers"]["X-Paywall-Auth-Cache"] for seen in site.content_requests] == [
        "MISS",
        "HIT",
    ]
    for others in (
        [("Cookie", "a=1")],
        [("Cookie", "a=1; paywall_session=")],
        [("Cookie", "a=1"), ("Cookie", "paywall_session=demo-session-no-rights")],
    ):
        reply = await send(site.http, f"{base}/premium/a", others, host=HOST)
        assert reply.status in (303, 403), (others, reply.status)
    assert len(site.content_requests) == 2


# --- path parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["proxy", "auth_request"])
async def test_path_parameters_are_refused(start_stack: StartStack, mode: str) -> None:
    stack = await start_stack(server={"mode": mode})
    cookie = [("Cookie", f"paywall_session={PLAIN}")]
    for target in PATH_PARAMETERS:
        if mode == "proxy":
            reply = await send(stack.http, stack.url(target), cookie)
            assert reply.status == 400, (target, reply.status)
            assert "path parameters" in reply.text or "'..;'" in reply.text, reply.text
        else:
            asked = [*cookie, ("X-Original-URI", target)]
            reply = await send(stack.http, stack.url("/_paywall/auth"), asked)
            assert (reply.status, reply.headers["X-Paywall-Access"]) == (403, "bad_request")
    assert stack.content_requests == []


@BOTH_CONFIGS
async def test_nginx_path_parameters_never_reach_the_content_server(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    for target in PATH_PARAMETERS:
        for session in (None, PLAIN):
            reply = await site.get(target, session=session)
            assert reply.status == 400, (target, session, reply.status)
    assert site.content_requests == []


async def test_allowed_path_parameters_are_matched_and_forwarded_as_one_reading(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(server={"allow_path_parameters": True})
    # Read literally, "premium;x" is not "premium": public, and forwarded exactly so.
    public = await send(stack.http, stack.url("/premium;x/a"))
    assert public.status == 200
    assert stack.content_requests[-1]["path_qs"] == "/premium;x/a"
    assert stack.content_requests[-1]["headers"]["X-Paywall-Access"] == "public"
    # Under /premium/ a segment with a parameter is still premium.
    assert (await send(stack.http, stack.url("/premium/a;x"))).status == 303
    # "..;" stays refused: Tomcat reads it as "..".
    assert (await send(stack.http, stack.url("/news/..;/premium/a"))).status == 400
    assert [seen["path_qs"] for seen in stack.content_requests] == ["/premium;x/a"]


# --- headers the upstream might take for the gateway's or route by ------------------------------


async def test_proxy_mode_strips_lookalike_and_routing_headers(start_stack: StartStack) -> None:
    stack = await start_stack()
    cookie = [("Cookie", f"paywall_session={PLAIN}")]
    for target in ("/news", "/premium/a"):
        reply = await send(stack.http, stack.url(target), [*cookie, *SPOOFED_HEADERS])
        assert reply.status == 200, (target, reply.text)
        seen = stack.content_requests[-1]["headers"]
        names = {cgi_name(name) for name in seen}
        leaked = names & {cgi_name(name) for name, _ in SPOOFED_HEADERS} - GATEWAY_SET
        # X-Forwarded-Host is the gateway's own (from the Host header), checked below.
        assert leaked - {"x-forwarded-host"} == set(), target
        # The gateway's own headers arrive once each, in the gateway's spelling, its values.
        assert [n for n in seen if cgi_name(n) in GATEWAY_SET] == [
            n for n in seen if n in ("X-Paywall-Access", "X-Paywall-Cache", "X-Paywall-Customer-Id")
        ]
        assert seen["X-Paywall-Access"] in ("public", "granted")
        assert seen.get("X-Forwarded-Host") != "evil.example"
    assert stack.content_requests[-1]["headers"]["X-Paywall-Customer-Id"] == "100001"


async def test_proxy_mode_strips_client_address_claims_from_untrusted_peers(
    start_stack: StartStack,
) -> None:
    # Nobody is trusted: the test client is just a visitor.
    stack = await start_stack(server={"trusted_proxies": []})
    claims = [
        ("X-Real-IP", "10.0.0.1"),
        ("X_Real_IP", "10.0.0.1"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Client-IP", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("X-Forwarded-Prefix", "/premium"),
    ]
    assert (await send(stack.http, stack.url("/news"), claims)).status == 200
    seen = {cgi_name(name) for name in stack.content_requests[-1]["headers"]}
    assert seen & {cgi_name(name) for name, _ in claims} == set()


@BOTH_CONFIGS
async def test_nginx_strips_lookalike_and_routing_headers(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    base = f"http://127.0.0.1:{site.nginx.port}"
    cookie = [("Cookie", f"paywall_session={PLAIN}")]
    claims = [
        ("X-Real-IP", "10.0.0.1"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Prefix", "/premium"),
        ("Forwarded", "for=10.0.0.1"),
    ]
    for target in ("/news", "/premium/a"):
        lines = [*cookie, *SPOOFED_HEADERS, *claims]
        reply = await send(site.http, f"{base}{target}", lines, host=HOST)
        assert reply.status == 200, (target, reply.status)
        seen = site.content_requests[-1]["headers"]
        names = {cgi_name(name) for name in seen}
        leaked = names & {cgi_name(name) for name, _ in SPOOFED_HEADERS}
        # nginx cannot drop headers by prefix: the content server trusts only the names the
        # configuration sets (deploy/nginx/README.md), and those carry nginx's values.
        assert leaked - GATEWAY_SET - {"x-paywall-anything"} == set(), target
        assert [n for n in seen if cgi_name(n) in GATEWAY_SET] == [
            n for n in seen if n in ("X-Paywall-Access", "X-Paywall-Cache", "X-Paywall-Customer-Id")
        ]
        assert seen["X-Paywall-Access"] in ("public", "granted")
        assert seen["X-Real-IP"] == "127.0.0.1"
        for name in ("X-Forwarded-Host", "X-Forwarded-Prefix", "Forwarded"):
            assert name not in seen, (target, name)
    assert site.content_requests[-1]["headers"]["X-Paywall-Customer-Id"] == "100001"
