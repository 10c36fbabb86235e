"""Issue 9.3, end to end: values from the platform never reach a header or a cookie unchecked.

A platform (here a small fake on loopback, answering the three operations with raw bodies the
test chooses) that sends a customer id or a session token the gateway could not put into a
header or a cookie as it is, or a hasAccess answer naming a key twice (denied first, granted
last), is a platform that broke its contract: the visitor gets what a platform outage gives —
503 in proxy mode and through nginx (the gateway's page), 403 ``X-Paywall-Access: unavailable``
at ``/_paywall/auth``. Never a 500, a dropped connection or a grant; the bad value appears in no
response header, and nothing reaches the content server. Run through proxy mode, the auth
endpoint (``/_paywall/auth`` and ``/_paywall/deny``) and the real nginx with both shipped
configurations.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from tests.deploy.test_nginx import BOTH_CONFIGS, HOST, Site, StartSite
from tests.web.conftest import CONTENT_LOG, Stack, StartStack

API_TOKEN = "fake-platform-api-token"
CUSTOMER = "100001"
VISITOR_SESSION = "visitor-session-1"
TRANSFER = "visitor-transfer-token-1"
JSON_ACCEPT = {"Accept": "application/json"}
GRANT = {
    "customerId": CUSTOMER,
    "customerBlocked": False,
    "accessGranted": True,
    "items": [{"accessRightUniqueId": "premium", "accessGranted": True}],
}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


@dataclass
class FakePlatform:
    """The three operations the gateway uses, each answering 200 with a configurable raw body;
    ``calls`` counts the requests per operation. hasAccess grants "premium" to whichever
    customer it is asked about (echoing the id, as the platform does) unless told otherwise."""

    validate: bytes = _json({"customerId": CUSTOMER})
    transfer: bytes = _json({"customerSession": VISITOR_SESSION})
    has_access: bytes | None = None
    calls: dict[str, int] = field(
        default_factory=lambda: {"validate": 0, "transfer": 0, "has_access": 0}
    )

    def app(self) -> web.Application:
        def answer(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
            async def handler(request: web.Request) -> web.Response:
                self.calls[name] += 1
                body: bytes | None = getattr(self, name)
                if body is None:
                    body = _json({**GRANT, "customerId": request.match_info["customer"]})
                return web.Response(body=body, content_type="application/json")

            return handler

        app = web.Application()
        app[FAKE] = self
        app.router.add_get("/api/v3.0/sessions/validate", answer("validate"))
        app.router.add_get("/api/v3.0/sessions/transferToken", answer("transfer"))
        app.router.add_get("/api/v3.0/accessRights/{customer}/hasAccess", answer("has_access"))
        return app


FAKE = web.AppKey("fake_platform", FakePlatform)


@dataclass(frozen=True)
class Case:
    """One way the platform misbehaves. ``credential``: how the visitor proves who they are
    (``"session"`` cookie or ``"transfer"`` token); ``leak``: text that must appear in no
    response header; ``asked``: the operation whose answer is bad (it must have been called)."""

    platform: dict[str, bytes]
    credential: str
    asked: str
    leak: tuple[str, ...] = ()


def _customer_id(value: str, *leak: str) -> Case:
    return Case({"validate": _json({"customerId": value})}, "session", "validate", leak)


def _session_token(value: str, *leak: str) -> Case:
    return Case({"transfer": _json({"customerSession": value})}, "transfer", "transfer", leak)


DUPLICATE_GRANT = (
    b'{"customerId": "100001", "customerBlocked": false, "accessGranted": false, "items": '
    b'[{"accessRightUniqueId": "premium", "accessGranted": false, "accessGranted": true}],'
    b' "accessGranted": true}'
)

BAD_ANSWERS = {
    "customer-id-crlf": _customer_id("100001\r\nX-Injected: yes", "X-Injected"),
    "customer-id-lf": _customer_id("100001\nX-Injected: yes", "X-Injected"),
    "customer-id-nul": _customer_id("100001\x00", "100001\x00"),
    "customer-id-control": _customer_id("100001\x1b[0m", "\x1b"),
    "customer-id-non-ascii": _customer_id("100001é", "100001é"),
    "customer-id-absurdly-long": _customer_id("1" * 5000, "1" * 5000),
    "customer-id-empty": _customer_id(""),
    "session-token-crlf": _session_token("tok\r\nSet-Cookie: evil=1", "evil"),
    "session-token-space": _session_token("tok en", "tok en"),
    "session-token-semicolon": _session_token("tok;Domain=evil.example", "evil.example"),
    "session-token-quote": _session_token('tok"en', 'tok"en'),
    "session-token-non-ascii": _session_token("tök", "tök"),
    "session-token-4097-chars": _session_token("t" * 4097, "t" * 4097),
    "session-token-empty": _session_token(""),
    "has-access-duplicate-keys": Case({"has_access": DUPLICATE_GRANT}, "session", "has_access"),
    "has-access-echoed-customer-id-crlf": Case(
        {"has_access": _json({**GRANT, "customerId": "100001\r\nX-Injected: yes"})},
        "session",
        "has_access",
        ("X-Injected",),
    ),
}
CASES = [pytest.param(case, id=name) for name, case in BAD_ANSWERS.items()]
TRANSFER_CASES = [
    pytest.param(case, id=name)
    for name, case in BAD_ANSWERS.items()
    if case.credential == "transfer"
]


def _platform_section(platform: TestServer) -> dict[str, Any]:
    return {
        "base_url": str(platform.make_url("/api/v3.0")),
        "api_token": API_TOKEN,
        "max_retries": 0,
        # Every request must reach the platform's bad answer, not an open breaker.
        "breaker_failures": 0,
    }


def _with_credential(case: Case, path: str) -> tuple[str, dict[str, str]]:
    """The target and headers a visitor with the case's credential sends for ``path``."""
    if case.credential == "transfer":
        separator = "&" if "?" in path else "?"
        return f"{path}{separator}transferToken={TRANSFER}", {}
    return path, {"Cookie": f"paywall_session={VISITOR_SESSION}"}


def assert_clean(
    status: int, headers: CIMultiDictProxy[str], raw: tuple[tuple[bytes, bytes], ...], case: Case
) -> None:
    assert status != 500
    assert "Set-Cookie" not in headers  # no session from a bad exchange, nothing injected
    assert "X-Injected" not in headers
    raw_text = b"\n".join(name + b": " + value for name, value in raw).decode("latin-1")
    for leak in case.leak:
        assert leak not in raw_text
        for name, value in headers.items():
            assert leak not in name
            assert leak not in value


def assert_asked(fake: FakePlatform, case: Case) -> None:
    assert fake.calls[case.asked] >= 1, fake.calls
    if case.credential == "transfer":
        # Refused where it was read: the unfit token was never used as a session.
        assert fake.calls["validate"] == 0


# --- proxy mode ---------------------------------------------------------------------------------


StartFake = Callable[[Case], Awaitable[TestServer]]


@pytest.fixture
def fake_platform(aiohttp_server: Any) -> StartFake:
    """``await fake_platform(case)``: a :class:`FakePlatform` misbehaving as ``case`` says."""

    async def start(case: Case) -> TestServer:
        fake = FakePlatform()
        for operation, body in case.platform.items():
            setattr(fake, operation, body)
        server: TestServer = await aiohttp_server(fake.app())
        return server

    return start


def _fake_of(stack: Stack | Site) -> FakePlatform:
    return stack.platform.app[FAKE]


async def proxy_stack(start_stack: StartStack, fake_platform: StartFake, case: Case) -> Stack:
    platform = await fake_platform(case)
    stack = await start_stack(platform=_platform_section(platform))
    stack.platform = platform  # the simulator start_stack also started is never asked
    return stack


@pytest.mark.parametrize("case", CASES)
async def test_proxy_mode_answers_503_never_500(
    start_stack: StartStack, fake_platform: StartFake, case: Case
) -> None:
    stack = await proxy_stack(start_stack, fake_platform, case)
    target, headers = _with_credential(case, "/premium/a")
    page = await stack.get(target, headers=headers)
    assert page.status == 503, page.status
    assert "Temporarily unavailable" in await page.text()
    assert page.headers["Retry-After"] == "5"
    assert_clean(page.status, page.headers, page.raw_headers, case)
    api = await stack.get(target, headers={**headers, **JSON_ACCEPT})
    assert api.status == 503
    assert (await api.json())["error"] == "unavailable"
    assert_clean(api.status, api.headers, api.raw_headers, case)
    assert stack.content_requests == []
    assert_asked(_fake_of(stack), case)


@pytest.mark.parametrize("case", TRANSFER_CASES)
async def test_proxy_mode_hand_off_with_an_unfit_token(
    start_stack: StartStack, fake_platform: StartFake, case: Case
) -> None:
    stack = await proxy_stack(start_stack, fake_platform, case)
    # A public page: the login is lost, the page is not (303 to it without the token).
    public = await stack.get(f"/news?a=1&transferToken={TRANSFER}")
    assert (public.status, public.headers["Location"]) == (303, "/news?a=1")
    assert_clean(public.status, public.headers, public.raw_headers, case)
    # The explicit hand-off endpoint: the outage answer, no cookie.
    handoff = await stack.get(f"/_paywall/transfer?transferToken={TRANSFER}&return_to=/premium/a")
    assert handoff.status == 503
    assert_clean(handoff.status, handoff.headers, handoff.raw_headers, case)
    assert stack.content_requests == []
    assert_asked(_fake_of(stack), case)


# --- the auth endpoint --------------------------------------------------------------------------


def _original(target: str, headers: dict[str, str]) -> dict[str, str]:
    return {"X-Original-URI": target, "X-Original-Method": "GET", "Host": HOST, **headers}


@pytest.mark.parametrize("case", CASES)
async def test_auth_endpoint_says_unavailable_and_deny_page_is_503(
    start_stack: StartStack, fake_platform: StartFake, case: Case
) -> None:
    platform = await fake_platform(case)
    stack = await start_stack(
        server={"mode": "auth_request", "allowed_redirect_hosts": [HOST]},
        platform=_platform_section(platform),
    )
    stack.platform = platform
    target, headers = _with_credential(case, "/premium/a")
    if case.credential == "session":
        auth = await stack.get("/_paywall/auth", headers=_original(target, headers))
        assert (auth.status, auth.headers["X-Paywall-Access"]) == (403, "unavailable")
        assert auth.headers["X-Accel-Expires"] == "0"
        assert "X-Paywall-Customer-Id" not in auth.headers or case.asked == "has_access"
        assert_clean(auth.status, auth.headers, auth.raw_headers, case)
    deny = await stack.get("/_paywall/deny", headers=_original(target, headers))
    assert deny.status == 503
    assert "Temporarily unavailable" in await deny.text()
    assert_clean(deny.status, deny.headers, deny.raw_headers, case)
    if case.credential == "transfer":
        public = await stack.get(
            "/_paywall/deny", headers=_original(f"/news?transferToken={TRANSFER}", {})
        )
        assert (public.status, public.headers["Location"]) == (303, "/news")
        assert_clean(public.status, public.headers, public.raw_headers, case)
    assert stack.content_requests == []
    assert_asked(_fake_of(stack), case)


# --- the real nginx with both shipped configurations --------------------------------------------

StartFakeSite = Callable[[str, Case], Awaitable[Site]]


@pytest.fixture
def start_fake_site(start_site: StartSite, fake_platform: StartFake) -> StartFakeSite:
    """tests/deploy's site (content server, gateway in auth_request mode, nginx with a shipped
    configuration) with the fake platform in place of the simulator."""

    async def start(config: str, case: Case) -> Site:
        platform = await fake_platform(case)
        return await start_site(
            config, platform=_platform_section(platform), platform_server=platform
        )

    return start


async def _nginx_get(
    site: Site, target: str, headers: dict[str, str]
) -> tuple[int, CIMultiDictProxy[str], tuple[tuple[bytes, bytes], ...], str]:
    url = f"http://127.0.0.1:{site.nginx.port}{target}"
    sent = {"Host": HOST, **headers}
    async with site.http.get(url, headers=sent, allow_redirects=False) as response:
        return response.status, response.headers, response.raw_headers, await response.text()


@BOTH_CONFIGS
@pytest.mark.parametrize("case", CASES)
async def test_nginx_gives_the_gateways_503_page(
    start_fake_site: StartFakeSite, config: str, case: Case
) -> None:
    site = await start_fake_site(config, case)
    target, headers = _with_credential(case, "/premium/a")
    for _ in range(2):  # the cached configuration must not keep anything either
        status, got, raw, text = await _nginx_get(site, target, headers)
        assert status == 503, (status, text)
        assert "Temporarily unavailable" in text  # the gateway's page, not nginx's
        assert_clean(status, got, raw, case)
    status, got, raw, text = await _nginx_get(site, target, {**headers, **JSON_ACCEPT})
    assert status == 503
    assert json.loads(text)["error"] == "unavailable"
    assert_clean(status, got, raw, case)
    if case.credential == "transfer":
        status, got, raw, _ = await _nginx_get(site, f"/news?transferToken={TRANSFER}", {})
        assert (status, got["Location"]) == (303, "/news")
        assert_clean(status, got, raw, case)
    assert site.content.app[CONTENT_LOG].requests == []
    assert_asked(_fake_of(site), case)
