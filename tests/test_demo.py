"""The demo: the site's login redirect checks in-process, then ``python -m gateway.demo`` for real.

The end-to-end part starts the launcher as a subprocess on free loopback ports (simulator, demo
site, gateway) and drives it like a browser: the printed URLs, the login flow, public pages,
and shutdown on SIGTERM.
"""

from __future__ import annotations

import contextlib
import html
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway.demo.site import (
    ARTICLES,
    FEATURED_PREMIUM,
    SiteOptions,
    create_app,
    load_demo_customers,
    origin_of,
    safe_return_to,
    with_transfer_token,
)
from gateway.sandbox.app import API_PREFIX, STATE
from gateway.sandbox.app import create_app as create_sandbox_app
from gateway.sandbox.data import load_data
from tests.conftest import REPO_ROOT, free_port

AiohttpServer = Callable[..., Awaitable[TestServer]]
AiohttpClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]

SEED_FILE = REPO_ROOT / "gateway" / "resources" / "sandbox-data.json"
GATEWAY = "http://127.0.0.1:8080"
ORIGINS = frozenset({"http://127.0.0.1:8080"})
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PLAIN_CUSTOMER = "100001"
ARTICLE_TEXT = FEATURED_PREMIUM.body[0]
STARTUP_BUDGET = 60.0  # the launcher's own start-up timeout is 20 s
STOP_BUDGET = 20.0


# --- return_to --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("/", id="root"),
        pytest.param("/premium/the-long-read", id="path"),
        pytest.param("/premium/x?a=1&b=2#top", id="path-query-fragment"),
        pytest.param("/a%20b/c", id="encoded-space"),
        pytest.param("http://127.0.0.1:8080/premium/x", id="gateway-url"),
        pytest.param("HTTP://127.0.0.1:8080/premium/x?a=1", id="gateway-url-upper-scheme"),
    ],
)
def test_return_to_accepts_own_paths_and_the_gateway_origin(value: str) -> None:
    assert safe_return_to(value, ORIGINS) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("//evil.com", id="protocol-relative"),
        pytest.param("///evil.com", id="triple-slash"),
        pytest.param("/\\evil.com", id="slash-backslash"),
        pytest.param("\\\\evil.com", id="double-backslash"),
        pytest.param("https://evil.com/", id="other-host-https"),
        pytest.param("http://evil.com/premium/x", id="other-host-http"),
        pytest.param("http://127.0.0.1:8080.evil.com/", id="host-prefix"),
        pytest.param("http://127.0.0.1:8080@evil.com/", id="userinfo"),
        pytest.param("http://evil.com\\@127.0.0.1:8080/", id="backslash-userinfo"),
        pytest.param("http://evil.com#@127.0.0.1:8080/", id="fragment-userinfo"),
        pytest.param("http://127.0.0.1:9999/", id="other-port"),
        pytest.param("https://127.0.0.1:8080/", id="other-scheme"),
        pytest.param("http://127.0.0.1:8080:80/", id="two-ports"),
        pytest.param("http:evil.com", id="scheme-no-slashes"),
        pytest.param("http:/evil.com", id="scheme-one-slash"),
        pytest.param("https:\\\\evil.com", id="scheme-backslashes"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("JaVaScRiPt:alert(document.cookie)", id="javascript-mixed-case"),
        pytest.param("java\tscript:alert(1)", id="javascript-tab"),
        pytest.param("data:text/html,<script>alert(1)</script>", id="data"),
        pytest.param("evil.com", id="bare-host"),
        pytest.param("premium/x", id="relative-path"),
        pytest.param("/\t/evil.com", id="tab"),
        pytest.param("/\n/evil.com", id="newline"),
        pytest.param(" //evil.com", id="leading-space"),
        pytest.param("%2F%2Fevil.com", id="encoded-slashes"),
        pytest.param("/%2Fevil.com", id="encoded-second-slash"),
        pytest.param("/%2f%2fevil.com", id="encoded-lower-case"),
        pytest.param("/%5Cevil.com", id="encoded-backslash"),
        pytest.param("/%252F%252Fevil.com", id="double-encoded"),
        pytest.param("/%25252F/evil.com", id="triple-encoded"),
        pytest.param("/%09/evil.com", id="encoded-tab"),
        pytest.param("/\uff0f\uff0fevil.com", id="fullwidth-slashes"),
        pytest.param("/" + "a" * 3000, id="too-long"),
    ],
)
def test_return_to_refuses_open_redirects(value: str) -> None:
    assert safe_return_to(value, ORIGINS) is None


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        pytest.param("http://127.0.0.1:8080/x", "http://127.0.0.1:8080", id="explicit-port"),
        pytest.param("https://Example.COM/", "https://example.com:443", id="default-port"),
        pytest.param("http://[::1]:8080/", "http://[::1]:8080", id="ipv6"),
        pytest.param("ftp://example.com/", None, id="other-scheme"),
        pytest.param("http://a@example.com/", None, id="userinfo"),
        pytest.param("http://example.com:99999/", None, id="bad-port"),
        pytest.param("/path", None, id="relative"),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("/premium/x", "/premium/x?transferToken=T0k", id="path"),
        pytest.param("/p?a=1#top", "/p?a=1&transferToken=T0k#top", id="query-fragment"),
        pytest.param(
            "http://h:1/p?transferToken=old&b=2",
            "http://h:1/p?b=2&transferToken=T0k",
            id="replaces-old-token",
        ),
    ],
)
def test_with_transfer_token(url: str, expected: str) -> None:
    assert with_transfer_token(url, "T0k") == expected


def test_transfer_token_is_percent_encoded() -> None:
    assert with_transfer_token("/p", "a b/c&d") == "/p?transferToken=a%20b%2Fc%26d"


def test_login_offers_the_valid_seeded_sessions_only() -> None:
    customers = {c.session_token: c for c in load_demo_customers(SEED_FILE, datetime.now(UTC))}
    assert customers["demo-session-plain"].customer_id == PLAIN_CUSTOMER
    assert customers["demo-session-no-rights"].customer_id == "100008"
    assert "premium" in customers["demo-session-plain"].description
    assert "demo-session-expired" not in customers


# --- the site in-process, against an in-process simulator ------------------------------------


@dataclass
class SiteWithPlatform:
    client: TestClient[web.Request, web.Application]
    platform: TestServer
    platform_app: web.Application


@pytest.fixture
async def site(aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient) -> SiteWithPlatform:
    now = datetime.now(UTC)
    platform_app = create_sandbox_app(load_data(SEED_FILE, now))
    platform = await aiohttp_server(platform_app)
    options = SiteOptions(
        platform_url=str(platform.make_url(API_PREFIX)),
        customers=load_demo_customers(SEED_FILE, now),
        allowed_origins=ORIGINS,
    )
    client = await aiohttp_client(create_app(options))
    return SiteWithPlatform(client, platform, platform_app)


async def test_site_login_redirects_back_with_a_transfer_token_for_the_chosen_session(
    site: SiteWithPlatform,
) -> None:
    return_to = f"{GATEWAY}{FEATURED_PREMIUM.path}?page=2"
    page = await site.client.get("/login", params={"return_to": return_to})
    assert page.status == 200
    text = await page.text()
    assert "demo-session-plain" in text
    assert html.escape(return_to) in text

    response = await site.client.post(
        "/login",
        data={"session": "demo-session-plain", "return_to": return_to},
        allow_redirects=False,
    )
    assert response.status == 303
    location = URL(response.headers["Location"])
    assert str(location.with_query(None)) == f"{GATEWAY}{FEATURED_PREMIUM.path}"
    assert location.query["page"] == "2"
    token = location.query["transferToken"]
    redeemed = await site.client.session.get(
        site.platform.make_url(f"{API_PREFIX}/sessions/transferToken"),
        params={"transferToken": token},
    )
    assert redeemed.status == 200
    assert await redeemed.json() == {"customerSession": "demo-session-plain"}


async def test_site_login_with_a_path_returns_to_that_path(site: SiteWithPlatform) -> None:
    response = await site.client.post(
        "/login",
        data={"session": "demo-session-no-rights", "return_to": "/premium/market-outlook"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert re.fullmatch(
        r"/premium/market-outlook\?transferToken=[A-Za-z0-9_\-]+", response.headers["Location"]
    )


@pytest.mark.parametrize(
    "raw_query",
    [
        pytest.param("return_to=//evil.com", id="protocol-relative"),
        pytest.param("return_to=%2F%2Fevil.com", id="encoded"),
        pytest.param("return_to=%252F%252Fevil.com", id="double-encoded"),
        pytest.param("return_to=/%5Cevil.com", id="encoded-backslash"),
        pytest.param("return_to=https%3A%2F%2Fevil.com%2F", id="absolute"),
        pytest.param("return_to=javascript%3Aalert(1)", id="javascript"),
    ],
)
async def test_site_login_refuses_foreign_return_to(site: SiteWithPlatform, raw_query: str) -> None:
    page = await site.client.get(URL(f"/login?{raw_query}", encoded=True))
    assert page.status == 400
    value = URL(f"/?{raw_query}", encoded=True).query["return_to"]
    response = await site.client.post(
        "/login",
        data={"session": "demo-session-plain", "return_to": value},
        allow_redirects=False,
    )
    assert response.status == 400
    assert "Location" not in response.headers
    assert site.platform_app[STATE].transfer_tokens == {}  # the platform was never asked


@pytest.mark.parametrize(
    "session",
    [
        pytest.param("demo-session-expired", id="expired-not-offered"),
        pytest.param("some-other-token", id="unknown"),
        pytest.param("", id="empty"),
    ],
)
async def test_site_login_only_for_offered_sessions(site: SiteWithPlatform, session: str) -> None:
    response = await site.client.post(
        "/login", data={"session": session, "return_to": "/"}, allow_redirects=False
    )
    assert response.status == 400
    assert site.platform_app[STATE].transfer_tokens == {}


async def test_site_reports_a_platform_it_cannot_reach(aiohttp_client: AiohttpClient) -> None:
    options = SiteOptions(
        platform_url=f"http://127.0.0.1:{free_port()}{API_PREFIX}",
        customers=load_demo_customers(SEED_FILE, datetime.now(UTC)),
        allowed_origins=ORIGINS,
    )
    client = await aiohttp_client(create_app(options))
    response = await client.post(
        "/login", data={"session": "demo-session-plain", "return_to": "/"}, allow_redirects=False
    )
    assert response.status == 502
    assert "Location" not in response.headers


async def test_site_premium_needs_the_gateways_grant(site: SiteWithPlatform) -> None:
    direct = await site.client.get(FEATURED_PREMIUM.path)
    assert direct.status == 403
    assert ARTICLE_TEXT not in await direct.text()

    denied = await site.client.get(FEATURED_PREMIUM.path, headers={"X-Paywall-Access": "public"})
    assert denied.status == 403

    granted = await site.client.get(
        FEATURED_PREMIUM.path,
        headers={"X-Paywall-Access": "granted", "X-Paywall-Customer-Id": "<b>100001</b>"},
    )
    assert granted.status == 200
    text = await granted.text()
    assert ARTICLE_TEXT in text
    assert "subscriber &lt;b&gt;100001&lt;/b&gt;" in text
    assert granted.headers["Cache-Control"] == "private, no-store"


async def test_site_index_links_every_article(site: SiteWithPlatform) -> None:
    response = await site.client.get("/")
    assert response.status == 200
    text = await response.text()
    for article in ARTICLES:
        assert f"href='{article.path}'" in text
        page = await site.client.get(
            article.path, headers={"X-Paywall-Access": "granted"} if article.premium else {}
        )
        assert page.status == 200, article.path
    assert (await site.client.get("/articles/no-such-article")).status == 404
    public_as_premium = next(a for a in ARTICLES if not a.premium).slug
    assert (await site.client.get(f"/premium/{public_as_premium}")).status == 404


# --- python -m gateway.demo -------------------------------------------------------------------

_URL_LINE = re.compile(r"^  (paywall|unlocked|login|home)\s+(http://\S+)$")
_PID_LINE = re.compile(r"^  (sandbox|site|gateway)\s+pid (\d+)\s")
_LAST_LINE = "Ctrl-C stops everything."


@dataclass
class RunningDemo:
    process: subprocess.Popen[str]
    ports: dict[str, int]
    urls: dict[str, str]
    pids: dict[str, int]
    output: list[str]
    stderr: Path

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def diagnostics(self) -> str:
        stderr = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "stdout:\n" + "\n".join(self.output) + "\nstderr:\n" + stderr


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _demo_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYWALL_")}


def _launch(tmp: Path, ports: dict[str, int]) -> RunningDemo:
    """Start the launcher in its own process group (so a test can always clean up after it)."""
    stderr = tmp / "demo.stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gateway.demo", "--log-dir", str(tmp / "logs")),
                *("--gateway-port", str(ports["gateway"]), "--admin-port", str(ports["admin"])),
                *("--site-port", str(ports["site"]), "--platform-port", str(ports["platform"])),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=_demo_environment(),
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    return RunningDemo(process, ports, {}, {}, [], stderr)


def _read_banner(demo: RunningDemo) -> None:
    """Read stdout (in a thread, which keeps draining it) until the banner is complete."""
    lines: queue.Queue[str | None] = queue.Queue()
    stdout = demo.process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + STARTUP_BUDGET
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no demo banner within {STARTUP_BUDGET} s\n{demo.diagnostics()}")
        if line is None:
            demo.process.wait(timeout=STOP_BUDGET)
            pytest.fail(
                f"the demo exited ({demo.process.returncode}) before printing its URLs\n"
                f"{demo.diagnostics()}"
            )
        demo.output.append(line)
        if match := _URL_LINE.match(line):
            demo.urls[match.group(1)] = match.group(2)
        if match := _PID_LINE.match(line):
            demo.pids[match.group(1)] = int(match.group(2))
        if line == _LAST_LINE:
            break
    assert set(demo.urls) == {"paywall", "unlocked", "login", "home"}, demo.diagnostics()
    assert set(demo.pids) == {"sandbox", "site", "gateway"}, demo.diagnostics()


def _stop(demo: RunningDemo) -> None:
    """SIGTERM the launcher; if it or a child outlives the budget, SIGKILL its process group."""
    with contextlib.suppress(ProcessLookupError):
        demo.process.send_signal(signal.SIGTERM)
    try:
        demo.process.wait(timeout=STOP_BUDGET)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.process.pid, signal.SIGKILL)
        demo.process.wait(timeout=STOP_BUDGET)


@contextlib.contextmanager
def running_demo(tmp: Path) -> Iterator[RunningDemo]:
    names = ("gateway", "admin", "site", "platform")
    demo = _launch(tmp, dict(zip(names, _distinct_free_ports(4), strict=True)))
    try:
        _read_banner(demo)
        yield demo
    finally:
        _stop(demo)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    with running_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _session() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies for an IP-address host (127.0.0.1).
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=10),
        headers=BROWSER,
    )


def _session_cookie(response: aiohttp.ClientResponse) -> str:
    cookies = [c for c in response.headers.getall("Set-Cookie", []) if c.startswith("paywall_")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def test_demo_prints_the_gateway_urls(demo: RunningDemo) -> None:
    assert demo.urls["paywall"] == f"{demo.gateway}{FEATURED_PREMIUM.path}"
    unlocked = URL(demo.urls["unlocked"])
    assert str(unlocked.with_query(None)) == demo.urls["paywall"]
    assert unlocked.query["transferToken"]
    assert demo.urls["login"] == f"{demo.gateway}/login"


def _login_link(page: str) -> URL:
    found = re.search(r'<a class="login" href="([^"]+)"', page)
    assert found is not None, page
    return URL(html.unescape(found.group(1)))


async def test_premium_url_without_session_shows_the_paywall(demo: RunningDemo) -> None:
    async with _session() as http:
        response = await http.get(demo.urls["paywall"], allow_redirects=False)
        assert response.status == 401
        assert response.content_type == "text/html"
        text = await response.text()
        assert ARTICLE_TEXT not in text
        location = _login_link(text)
        assert str(location.with_query(None)) == demo.urls["login"]
        assert location.query["return_to"] == demo.urls["paywall"]

        api = await http.get(demo.urls["paywall"], headers={"Accept": "application/json"})
        assert api.status == 401
        assert ARTICLE_TEXT not in await api.text()

        # Client-supplied X-Paywall-* headers must not open the article.
        spoofed = await http.get(
            demo.urls["paywall"],
            headers={"X-Paywall-Access": "granted", "X-Paywall-Customer-Id": PLAIN_CUSTOMER},
            allow_redirects=False,
        )
        assert spoofed.status == 401
        assert ARTICLE_TEXT not in await spoofed.text()


async def test_transfer_token_url_sets_the_session_cookie_and_opens_the_article(
    demo: RunningDemo,
) -> None:
    async with _session() as http:
        handoff = await http.get(demo.urls["unlocked"], allow_redirects=False)
        assert handoff.status == 303, await handoff.text()
        target = URL(demo.urls["unlocked"]).join(URL(handoff.headers["Location"]))
        assert str(target) == demo.urls["paywall"]
        cookie = _session_cookie(handoff)
        assert cookie.startswith("paywall_session=")
        attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
        assert "httponly" in attributes
        assert "secure" not in attributes  # plain-HTTP demo: cookie_secure = false

        article = await http.get(target, allow_redirects=False)
        assert article.status == 200
        text = await article.text()
        assert ARTICLE_TEXT in text
        assert f"subscriber {PLAIN_CUSTOMER}" in text

    async with _session() as fresh:  # the token was for one use only
        again = await fresh.get(demo.urls["unlocked"], allow_redirects=False)
        assert again.status == 401
        assert ARTICLE_TEXT not in await again.text()


async def test_public_pages_open_without_a_session(demo: RunningDemo) -> None:
    async with _session() as http:
        home = await http.get(demo.urls["home"], allow_redirects=False)
        assert home.status == 200
        home_text = await home.text()
        for article in (a for a in ARTICLES if not a.premium):
            assert f"href='{article.path}'" in home_text
            page = await http.get(f"{demo.gateway}{article.path}", allow_redirects=False)
            assert page.status == 200
            assert html.escape(article.body[0]) in await page.text()
        assert not http.cookie_jar.filter_cookies(URL(demo.gateway))


async def _login_through_the_gateway(
    http: aiohttp.ClientSession, demo: RunningDemo, session_token: str
) -> aiohttp.ClientResponse:
    """Premium page (paywall) -> its login link -> choose ``session_token`` -> back with a
    transfer token -> back without it (cookie set) -> the premium page again, each hop checked."""
    first = await http.get(demo.urls["paywall"], allow_redirects=False)
    assert first.status == 401
    login_page = await http.get(_login_link(await first.text()), allow_redirects=False)
    assert login_page.status == 200
    forms = {
        html.unescape(session): html.unescape(return_to)
        for session, return_to in re.findall(
            r"name=session value='([^']*)'><input type=hidden name=return_to value='([^']*)'",
            await login_page.text(),
        )
    }
    assert forms.get(session_token) == demo.urls["paywall"], forms

    chosen = await http.post(
        demo.urls["login"],
        data={"session": session_token, "return_to": forms[session_token]},
        allow_redirects=False,
    )
    assert chosen.status == 303
    with_token = URL(chosen.headers["Location"])
    assert str(with_token.with_query(None)) == demo.urls["paywall"]
    assert with_token.query["transferToken"]

    handoff = await http.get(with_token, allow_redirects=False)
    assert handoff.status == 303
    assert str(with_token.join(URL(handoff.headers["Location"]))) == demo.urls["paywall"]
    _session_cookie(handoff)

    final = await http.get(demo.urls["paywall"], allow_redirects=False)
    await final.read()
    return final


async def test_login_flow_as_a_subscriber_lands_on_the_article(demo: RunningDemo) -> None:
    async with _session() as http:
        final = await _login_through_the_gateway(http, demo, "demo-session-plain")
        assert final.status == 200
        text = await final.text()
        assert ARTICLE_TEXT in text
        assert f"subscriber {PLAIN_CUSTOMER}" in text


async def test_login_flow_without_the_right_shows_the_paywall(demo: RunningDemo) -> None:
    async with _session() as http:
        final = await _login_through_the_gateway(http, demo, "demo-session-no-rights")
        assert final.status == 403
        assert final.content_type == "text/html"
        text = await final.text()
        assert "<html" in text.lower()
        assert ARTICLE_TEXT not in text


async def test_login_page_refuses_foreign_return_to_through_the_gateway(
    demo: RunningDemo,
) -> None:
    async with _session() as http:
        page = await http.get(
            URL(f"{demo.urls['login']}?return_to=%2F%2Fevil.com", encoded=True),
            allow_redirects=False,
        )
        assert page.status == 400
        posted = await http.post(
            demo.urls["login"],
            data={"session": "demo-session-plain", "return_to": "https://evil.com/"},
            allow_redirects=False,
        )
        assert posted.status == 400
        assert "Location" not in posted.headers


def test_sigterm_stops_the_demo_and_all_its_processes(tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        assert all(_alive(pid) for pid in demo.pids.values())
        demo.process.send_signal(signal.SIGTERM)
        code = demo.process.wait(timeout=STOP_BUDGET)
        assert code == 0, demo.diagnostics()
        # The launcher reaps its children before it exits: their pids are gone at once.
        assert {name for name, pid in demo.pids.items() if _alive(pid)} == set()
        assert [p for p in demo.ports.values() if _listening(p)] == []


def test_a_process_that_cannot_start_ends_the_demo_with_its_log(tmp_path: Path) -> None:
    names = ("gateway", "admin", "site", "platform")
    ports = dict(zip(names, _distinct_free_ports(4), strict=True))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["platform"]))
        taken.listen()
        demo = _launch(tmp_path, ports)
        try:
            code = demo.process.wait(timeout=STARTUP_BUDGET)
        finally:
            _stop(demo)
    assert code == 1
    stderr = demo.stderr.read_text()
    assert "sandbox exited with code 2 during start-up" in stderr
    assert "cannot listen" in stderr
    assert "Traceback" not in stderr
    assert not _listening(ports["site"])
    assert not _listening(ports["gateway"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--config", "/nonexistent/demo.toml"], "is missing", id="missing-config"),
        pytest.param(["--gateway-port", "9000", "--site-port", "9000"], "must differ", id="ports"),
    ],
)
def test_bad_invocation_exits_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.demo", *args],
        capture_output=True,
        text=True,
        env=_demo_environment(),
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
