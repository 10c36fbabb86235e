"""deploy/nginx/*.conf run by the real nginx in front of the gateway in auth_request mode.

Every test starts, on loopback: the platform simulator, a content server that echoes what it
receives, the gateway (``mode = "auth_request"``), and nginx with one of the shipped files, of
which only the upstream ports, ``listen``, the access log's path and the cache directory are
substituted. Visitors talk to nginx only. nginx's error log is printed when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.sandbox.app import STATE, SandboxOptions
from gateway.sandbox.app import create_app as create_sandbox
from gateway.sandbox.data import load_data
from gateway.web.app import create_app
from tests.conftest import REPO_ROOT, free_port, require_binary
from tests.web.conftest import CONTENT_CACHE_CONTROL, CONTENT_LOG, content_app

NGINX_DIR = REPO_ROOT / "deploy" / "nginx"
PLAIN_CONFIG = "paywall-auth.conf"
CACHED_CONFIG = "paywall-auth-cached.conf"
BOTH_CONFIGS = pytest.mark.parametrize("config", [PLAIN_CONFIG, CACHED_CONFIG])
# The cache directory named in the cached file; the tests put it under tmp_path.
CACHE_DIR = "/var/cache/nginx/paywall-auth"
# The access log named in both files; the tests write it under nginx's prefix (a relative path).
ACCESS_LOG = "/var/log/nginx/access.log"
ACCESS_LOG_FILE = "access.log"

API_TOKEN = "sandbox-api-token"
HOST = "news.example"
HOST_WITH_PORT = "news.example:8443"
LOGIN_URL = "https://login.example/sso"
ROUTES = [
    {"path": "/premium/**", "access_rights": ["premium"]},
    {"path": "/archive/**", "access_rights": ["archive"]},
    {"path": "/**", "public": True},
]
PLAIN = "demo-session-plain"  # customer 100001, holds "premium"
NO_RIGHTS = "demo-session-no-rights"  # customer 100008, holds nothing
JSON = {"Accept": "application/json"}

# The content server accepts whatever nginx passes on (up to 1000 header lines of up to 8 KB), as
# a server behind nginx would; aiohttp's defaults (128 headers) would refuse some of it.
CONTENT_SERVER_LIMITS = {"max_line_size": 16_384, "max_field_size": 16_384, "max_headers": 2048}

STARTUP_SECONDS = 10.0
STOP_SECONDS = 10.0


def login_location(return_url: str) -> str:
    return f"{LOGIN_URL}?return_to={quote(return_url, safe='')}"


# --- nginx --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """nginx with the auth_request module (Debian's nginx-light has it), or a failure."""
    binary = require_binary("nginx", "nginx-light")
    built = subprocess.run(
        [binary, "-V"], capture_output=True, text=True, timeout=10, check=False
    ).stderr
    if "--with-http_auth_request_module" not in built:
        pytest.fail(
            f"{binary} is built without the auth_request module (nginx -V):\n{built}",
            pytrace=False,
        )
    return binary


def site_config(name: str, *, gateway_port: int, content_port: int, port: int, cache: Path) -> str:
    """A shipped configuration with the test's ports and cache directory. Every replaced text
    must occur exactly once, so a reshaped file fails here instead of testing something else."""
    text = (NGINX_DIR / name).read_text(encoding="utf-8")
    replacements = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{gateway_port};",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{content_port};",
        "listen 80;": f"listen 127.0.0.1:{port};",
        ACCESS_LOG: ACCESS_LOG_FILE,
    }
    if "proxy_cache_path" in text:
        replacements[CACHE_DIR] = str(cache)
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{name}: expected {old!r} exactly once"
        text = text.replace(old, new)
    return text


def main_config(prefix: Path) -> str:
    """The top-level nginx.conf: everything nginx writes stays under ``prefix``."""
    # A root master would run its workers as "nobody", who cannot enter pytest's tmp_path.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\n"
        "worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {prefix}/access.log;\n"
        f"    client_body_temp_path {prefix}/client_body;\n"
        f"    proxy_temp_path {prefix}/proxy;\n"
        f"    fastcgi_temp_path {prefix}/fastcgi;\n"
        f"    uwsgi_temp_path {prefix}/uwsgi;\n"
        f"    scgi_temp_path {prefix}/scgi;\n"
        f"    include {prefix}/site.conf;\n"
        "}\n"
    )


def write_configs(prefix: Path, site: Callable[[int], str], port: int) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site(port), encoding="utf-8")
    (prefix / "nginx.conf").write_text(main_config(prefix), encoding="utf-8")
    (prefix / "error.log").write_text("", encoding="utf-8")


@dataclass
class Nginx:
    process: asyncio.subprocess.Process
    port: int
    prefix: Path

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        """Graceful stop (SIGQUIT), bounded; then the whole process group is killed."""
        process = self.process
        if process.returncode is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            # start_new_session made the master the leader of its own group: this reaches its
            # workers too, and nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.wait_for(process.wait(), STOP_SECONDS)


async def start_nginx(binary: str, prefix: Path, site: Callable[[int], str]) -> Nginx:
    """nginx on a free loopback port (``site(port)`` is the site configuration); a few
    attempts, since the port is free only when chosen."""
    for _ in range(3):
        port = free_port()
        await asyncio.to_thread(write_configs, prefix, site, port)
        process = await asyncio.create_subprocess_exec(
            binary,
            "-p",
            str(prefix),
            "-c",
            str(prefix / "nginx.conf"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            # Until it has read error_log from the configuration, nginx complains here.
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        nginx = Nginx(process, port, prefix)
        deadline = time.monotonic() + STARTUP_SECONDS
        while process.returncode is None and time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return nginx
        await nginx.stop()
        assert process.stderr is not None
        early = await asyncio.wait_for(process.stderr.read(), STOP_SECONDS)
        log = early.decode(errors="replace") + nginx.error_log()
        if "Address already in use" not in log:
            pytest.fail(f"nginx did not start on port {port}:\n{log}", pytrace=False)
    pytest.fail("nginx found no free port in three attempts", pytrace=False)


# --- the site: simulator, content server, gateway, nginx ---------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Site:
    nginx: Nginx
    gateway: TestServer
    platform: TestServer
    content: TestServer
    metrics: Metrics
    http: aiohttp.ClientSession

    @property
    def content_requests(self) -> list[dict[str, Any]]:
        return self.content.app[CONTENT_LOG].requests

    def auth_calls(self) -> float:
        """Requests the gateway answered at /_paywall/auth, whatever the outcome."""
        return sum(
            sample.value
            for metric in self.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "paywall_requests_total"
            and sample.labels.get("mode") == "auth_request"
        )

    async def get(
        self,
        target: str,
        *,
        session: str | None = None,
        headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> Reply:
        """One request to nginx for ``target`` (sent as given, no re-encoding), Host
        news.example, no redirects followed; ``session`` goes in the session cookie."""
        sent = {"Host": HOST}
        if session is not None:
            sent["Cookie"] = f"paywall_session={session}"
        sent.update(headers or {})
        url = URL(f"http://127.0.0.1:{self.nginx.port}{target}", encoded=True)
        async with self.http.request(method, url, headers=sent, allow_redirects=False) as r:
            return Reply(r.status, CIMultiDict(r.headers), await r.text())

    async def fresh_session(self, customer_id: str = "100001") -> str:
        """A new platform session nobody has used yet (so nothing about it is cached)."""
        body = await self._platform_post(f"/sessions/{customer_id}", {})
        token: str = body["customerSession"]
        return token

    async def transfer_token(self, session: str) -> str:
        body = await self._platform_post("/sessions/transferToken", {"customerSession": session})
        token: str = body["transferToken"]
        return token

    def platform_down(self) -> None:
        self.platform.app[STATE].options.error_rate = 1.0

    async def _platform_post(self, path: str, body: dict[str, Any]) -> Any:
        url = self.platform.make_url(f"/api/v3.0{path}")
        headers = {"X-plenigo-token": API_TOKEN}
        async with self.http.post(url, json=body, headers=headers) as response:
            assert response.status in (200, 202), await response.text()
            return await response.json()


StartSite = Callable[..., Awaitable[Site]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each request carries exactly the cookie the test gives it.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
async def start_site(
    aiohttp_server: Any, http: aiohttp.ClientSession, tmp_path: Path, nginx_binary: str
) -> AsyncIterator[StartSite]:
    """``await start_site(config, server={...}, access={...}, platform={...},
    platform_server=None, gateway_down=False)``: ``platform`` overrides keys of the gateway's
    ``[platform]`` section, ``platform_server`` replaces the simulator."""
    started: list[Nginx] = []

    async def start(
        config: str,
        *,
        server: dict[str, Any] | None = None,
        access: dict[str, Any] | None = None,
        platform: dict[str, Any] | None = None,
        platform_server: TestServer | None = None,
        callbacks: dict[str, Any] | None = None,
        gateway_down: bool = False,
    ) -> Site:
        if platform_server is None:
            seed = load_data(
                REPO_ROOT / "gateway" / "resources" / "sandbox-data.json", datetime.now(UTC)
            )
            sandbox = create_sandbox(seed, SandboxOptions(api_token=API_TOKEN))
            platform_server = await aiohttp_server(sandbox)
        content = await aiohttp_server(content_app(), **CONTENT_SERVER_LIMITS)
        settings = Settings(
            platform={
                "base_url": str(platform_server.make_url("/api/v3.0")),
                "api_token": API_TOKEN,
                "max_retries": 0,
                **(platform or {}),
            },
            server={
                "mode": "auth_request",
                "cookie_secure": False,
                "login_url": LOGIN_URL,
                "allowed_redirect_hosts": [HOST, HOST_WITH_PORT],
                **(server or {}),
            },
            access=access or {},
            callbacks=callbacks or {},
            routes=ROUTES,
        )
        metrics = Metrics()
        gateway = await aiohttp_server(create_app(settings, metrics=metrics))
        # Nothing listens on a port that was free a moment ago: the gateway is "down".
        gateway_port = free_port() if gateway_down else gateway.port
        prefix = tmp_path / f"nginx-{len(started)}"

        def site(port: int) -> str:
            return site_config(
                config,
                gateway_port=gateway_port,
                content_port=content.port,
                port=port,
                cache=prefix / "auth-cache",
            )

        nginx = await start_nginx(nginx_binary, prefix, site)
        started.append(nginx)
        return Site(nginx, gateway, platform_server, content, metrics, http)

    try:
        yield start
    finally:
        for nginx in started:
            await nginx.stop()
            # Shown by pytest only when the test failed.
            print(f"--- nginx error log ({nginx.prefix}) ---\n{nginx.error_log()}")


# --- both configurations ------------------------------------------------------------------------


@BOTH_CONFIGS
async def test_public_page_reaches_the_content_server_marked_public(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    reply = await site.get("/news/today?page=2", session=PLAIN)
    assert reply.status == 200
    seen = reply.json()
    assert seen["path_qs"] == "/news/today?page=2"
    assert seen["headers"]["X-Paywall-Access"] == "public"
    assert "X-Paywall-Customer-Id" not in seen["headers"]
    assert seen["headers"]["Host"] == HOST
    assert seen["headers"]["X-Forwarded-Proto"] == "http"
    assert reply.headers.getall("Cache-Control") == [CONTENT_CACHE_CONTROL]  # the site's own


@BOTH_CONFIGS
async def test_subscriber_reads_premium_content_with_the_customer_id(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    reply = await site.get("/premium/story?page=2", session=PLAIN)
    assert reply.status == 200
    seen = reply.json()
    assert seen["path_qs"] == "/premium/story?page=2"
    assert seen["headers"]["X-Paywall-Customer-Id"] == "100001"
    assert seen["headers"]["X-Paywall-Access"] == "granted"
    assert seen["headers"]["X-Paywall-Cache"] == "miss"
    # Unlike proxy mode, the content server gets the visitor's Cookie header as sent.
    assert seen["headers"]["Cookie"] == f"paywall_session={PLAIN}"
    # The auth subrequest's decision headers stay between nginx and the content server.
    assert "X-Paywall-Access" not in reply.headers
    # Paid content: a CDN in front of nginx must not keep it for the next visitor.
    assert reply.headers.getall("Cache-Control") == ["private"]
    # Seen again: the gateway answers from its cache; nginx (cached variant) from its own,
    # with the stored answer's headers.
    again = (await site.get("/premium/story?page=2", session=PLAIN)).json()["headers"]
    assert again["X-Paywall-Cache"] == ("hit" if config == PLAIN_CONFIG else "miss")


@BOTH_CONFIGS
async def test_subscriber_without_the_right_gets_the_paywall(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    page = await site.get("/premium/story", session=NO_RIGHTS)
    assert page.status == 403
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Subscribers only" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    api = await site.get("/premium/story", session=NO_RIGHTS, headers=JSON)
    assert api.status == 403
    assert api.headers["Content-Type"].startswith("application/json")
    assert api.json() == {"error": "access_denied", "reason": "platform_denied", "status": 403}
    assert site.content_requests == []


@BOTH_CONFIGS
async def test_anonymous_visitor_is_sent_to_the_login_and_back(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    browser = await site.get("/premium/story?page=2")
    assert browser.status == 303
    assert browser.headers["Location"] == login_location(f"http://{HOST}/premium/story?page=2")
    api = await site.get("/premium/story?page=2", headers=JSON)
    assert api.status == 401
    assert api.json()["login_url"] == browser.headers["Location"]
    # The port the visitor used is part of the page's URL.
    port = await site.get("/premium/story", headers={"Host": HOST_WITH_PORT})
    assert port.headers["Location"] == login_location(f"http://{HOST_WITH_PORT}/premium/story")
    # A host the gateway may not send browsers to gets no return URL (no open redirect).
    elsewhere = await site.get("/premium/story", headers={"Host": "evil.example"})
    assert (elsewhere.status, elsewhere.headers["Location"]) == (303, LOGIN_URL)
    assert site.content_requests == []


@BOTH_CONFIGS
async def test_transfer_token_is_exchanged_and_never_reaches_the_content_server(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    session = await site.fresh_session("100001")
    token = await site.transfer_token(session)
    landing = await site.get(f"/premium/story?page=2&transferToken={token}")
    assert landing.status == 303
    assert landing.headers["Location"] == "/premium/story?page=2"
    cookie = landing.headers["Set-Cookie"]
    assert cookie.startswith(f"paywall_session={session}; ")
    assert {"HttpOnly", "SameSite=Lax"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie  # cookie_secure = false in this plain-HTTP set-up

    article = await site.get(landing.headers["Location"], session=session)
    assert article.status == 200
    assert article.json()["headers"]["X-Paywall-Customer-Id"] == "100001"
    assert article.json()["path_qs"] == "/premium/story?page=2"

    # A visitor who already has a session (the gateway would grant) is handed off all the same.
    token_2 = await site.transfer_token(session)
    again = await site.get(f"/premium/story?transferToken={token_2}&page=3", session=PLAIN)
    assert (again.status, again.headers["Location"]) == (303, "/premium/story?page=3")
    assert again.headers["Set-Cookie"].startswith(f"paywall_session={session}; ")

    # One-time: the same link again is a visitor without a session.
    reused = await site.get(f"/premium/story?page=2&transferToken={token}")
    assert reused.status == 303
    assert reused.headers["Location"] == login_location(f"http://{HOST}/premium/story?page=2")

    seen = json.dumps(site.content_requests)
    assert token not in seen
    assert token_2 not in seen
    assert "transfertoken" not in seen.lower()


@BOTH_CONFIGS
async def test_transfer_token_on_a_public_page_any_spelling(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    session = await site.fresh_session("100001")
    token = await site.transfer_token(session)
    # The parameter name is matched case-insensitively, as the gateway reads it.
    landing = await site.get(f"/news?utm=mail&TransferToken={token}")
    assert landing.status == 303
    assert landing.headers["Location"] == "/news?utm=mail"
    assert landing.headers["Set-Cookie"].startswith(f"paywall_session={session}; ")
    # After ";" too (some frameworks split on it); the gateway drops that "&"-part whole.
    token = await site.transfer_token(session)
    landing = await site.get(f"/news?utm=mail;transferToken={token}")
    assert (landing.status, landing.headers["Location"]) == (303, "/news")
    assert landing.headers["Set-Cookie"].startswith(f"paywall_session={session}; ")
    # A spelling nginx's map does not catch: the gateway's auth answer refuses it (401), so
    # the deny page still does the hand-off and the content server never sees the token.
    token = await site.transfer_token(session)
    landing = await site.get(f"/news?transfer%54oken={token}&utm=x", session=PLAIN)
    assert (landing.status, landing.headers["Location"]) == (303, "/news?utm=x")
    assert landing.headers["Set-Cookie"].startswith(f"paywall_session={session}; ")
    assert "WWW-Authenticate" not in landing.headers
    assert site.content_requests == []


@BOTH_CONFIGS
async def test_invalid_transfer_token_leads_to_the_login(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    reply = await site.get("/premium/story?transferToken=not-a-valid-token")
    assert reply.status == 303
    assert reply.headers["Location"] == login_location(f"http://{HOST}/premium/story")
    assert "Set-Cookie" not in reply.headers
    public = await site.get("/news?transferToken=not-a-valid-token")
    assert (public.status, public.headers["Location"]) == (303, "/news")
    assert site.content_requests == []


@BOTH_CONFIGS
async def test_transfer_endpoint_is_proxied_to_the_gateway(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    session = await site.fresh_session("100001")
    token = await site.transfer_token(session)
    reply = await site.get(f"/_paywall/transfer?transferToken={token}&return_to=/premium/b")
    assert reply.status == 303
    assert reply.headers["Location"] == "/premium/b"
    assert reply.headers["Set-Cookie"].startswith(f"paywall_session={session}; ")
    # Without return_to the gateway would return to X-Original-URI: the visitor's is dropped.
    token = await site.transfer_token(session)
    spoofed = await site.get(
        f"/_paywall/transfer?transferToken={token}", headers={"X-Original-URI": "/premium/x"}
    )
    assert (spoofed.status, spoofed.headers["Location"]) == (303, "/")


@BOTH_CONFIGS
async def test_client_cannot_spoof_the_decision_headers(start_site: StartSite, config: str) -> None:
    site = await start_site(config)
    spoof = {
        "X-Paywall-Customer-Id": "999999",
        "X-Paywall-Access": "granted",
        "X-Paywall-Cache": "hit",
        "X-Paywall-Reason": "spoofed",
    }
    public = await site.get("/news", headers=spoof)
    assert public.status == 200
    seen = public.json()["headers"]
    assert seen["X-Paywall-Access"] == "public"
    assert seen["X-Paywall-Cache"] == "none"
    assert "X-Paywall-Customer-Id" not in seen
    assert "X-Paywall-Reason" not in seen

    premium = await site.get("/premium/story", session=PLAIN, headers=spoof)
    assert premium.status == 200
    seen = premium.json()["headers"]
    assert (seen["X-Paywall-Customer-Id"], seen["X-Paywall-Access"]) == ("100001", "granted")
    assert "X-Paywall-Reason" not in seen
    assert len(site.content_requests) == 2

    # What nginx tells the gateway about the request is nginx's, not the visitor's.
    lies = {
        **spoof,
        "X-Original-URI": "/news",
        "X-Original-Method": "OPTIONS",
        "X-Forwarded-Uri": "/news",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
    }
    anonymous = await site.get("/premium/story", headers=lies)
    assert anonymous.status == 303
    assert anonymous.headers["Location"] == login_location(f"http://{HOST}/premium/story")
    denied = await site.get("/premium/story", session=NO_RIGHTS, headers=lies)
    assert denied.status == 403
    assert len(site.content_requests) == 2


@BOTH_CONFIGS
async def test_the_method_is_part_of_the_decision(start_site: StartSite, config: str) -> None:
    # The routes cover GET and HEAD only; any other method falls to default_policy = "deny".
    site = await start_site(config)
    assert (await site.get("/premium/story", session=PLAIN)).status == 200  # cached grant
    for method in ("POST", "DELETE"):
        reply = await site.get(
            "/premium/story",
            session=PLAIN,
            method=method,
            headers={"X-Original-Method": "GET", "Accept": "application/json"},
        )
        assert reply.status == 403, method
        assert reply.json()["reason"] == "route_denied"
    assert [seen["method"] for seen in site.content_requests] == ["GET"]


@BOTH_CONFIGS
async def test_ambiguous_path_never_reaches_the_content_server(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    # A subscriber, and their grant for the decoded path is cached (in the cached variant).
    assert (await site.get("/premium/story", session=PLAIN)).status == 200
    before = len(site.content_requests)
    ambiguous = (
        "/premium/%2Fstory",
        "/premium%2Fstory",
        "/news/..%2Fpremium%2Fstory",
        "/premium/%00story",  # nginx itself refuses an encoded NUL
        "/premium/%ffstory",  # not UTF-8 once decoded
    )
    for target in ambiguous:
        reply = await site.get(target, session=PLAIN)
        assert reply.status in (400, 404), (target, reply.status, reply.text)
    assert len(site.content_requests) == before


@BOTH_CONFIGS
async def test_platform_down_is_a_503_page(start_site: StartSite, config: str) -> None:
    site = await start_site(config)
    session = await site.fresh_session("100001")
    site.platform_down()
    page = await site.get("/premium/story", session=session)
    assert page.status == 503
    assert "Temporarily unavailable" in page.text
    assert page.headers["Retry-After"] == "5"
    api = await site.get("/premium/story", session=session, headers=JSON)
    assert api.status == 503
    assert api.json()["error"] == "unavailable"
    assert site.content_requests == []


@BOTH_CONFIGS
async def test_fail_open_is_marked_and_never_reused(start_site: StartSite, config: str) -> None:
    site = await start_site(config, access={"on_api_error": "allow"})
    session = await site.fresh_session("100001")
    # The session is known to the gateway; the platform fails before "archive" is asked.
    assert (await site.get("/premium/story", session=session)).status == 200
    site.platform_down()
    for _ in range(2):
        reply = await site.get("/archive/1999", session=session)
        assert reply.status == 200
        seen = reply.json()["headers"]
        assert (seen["X-Paywall-Access"], seen["X-Paywall-Customer-Id"]) == ("fail-open", "100001")
    assert site.auth_calls() == 3


async def test_untrusted_nginx_is_refused(start_site: StartSite) -> None:
    # The gateway believes X-Original-URI only from trusted_proxies: nginx is not among them.
    site = await start_site(PLAIN_CONFIG, server={"trusted_proxies": ["192.0.2.0/24"]})
    for target in ("/news", "/premium/story"):
        assert (await site.get(target, session=PLAIN)).status == 403
    assert site.content_requests == []


async def test_platform_down_with_auth_unavailable_status_503_gets_nginx_page(
    start_site: StartSite,
) -> None:
    # auth_request turns a 503 from the auth endpoint into a 500: the visitor gets the
    # configuration's own 503 page instead of the gateway's (and no JSON).
    site = await start_site(PLAIN_CONFIG, server={"auth_unavailable_status": 503})
    session = await site.fresh_session("100001")
    site.platform_down()
    reply = await site.get("/premium/story", session=session, headers=JSON)
    assert reply.status == 503
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "Temporarily unavailable" in reply.text
    assert site.content_requests == []


@BOTH_CONFIGS
async def test_gateway_unreachable_is_a_503_page(start_site: StartSite, config: str) -> None:
    site = await start_site(config, gateway_down=True)
    # The auth subrequest fails (nginx: 500), and so does the deny page of a transfer token.
    for target in ("/premium/story", "/news", "/news?transferToken=abc"):
        reply = await site.get(target, session=PLAIN)
        assert reply.status == 503, (target, reply.status, reply.text)
        assert "Temporarily unavailable" in reply.text
        assert reply.headers["Retry-After"] == "5"
    assert site.content_requests == []


@BOTH_CONFIGS
async def test_gateway_endpoints_for_nginx_are_not_public(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    original = {"X-Original-URI": "/premium/story"}
    for target in ("/_paywall/auth", "/_paywall/deny", "/_paywall/metrics"):
        reply = await site.get(target, session=PLAIN, headers=original)
        assert reply.status == 404, target
    assert site.auth_calls() == 0
    assert site.content_requests == []


# --- the cached configuration -------------------------------------------------------------------


async def test_cached_grant_spares_the_gateway_repeat_calls(start_site: StartSite) -> None:
    site = await start_site(CACHED_CONFIG)
    for _ in range(5):
        spoof = {"X-Paywall-Auth-Cache": "HIT"}
        reply = await site.get("/premium/story", session=PLAIN, headers=spoof)
        assert reply.status == 200
        assert reply.json()["headers"]["X-Paywall-Customer-Id"] == "100001"
    assert site.auth_calls() == 1
    statuses = [seen["headers"]["X-Paywall-Auth-Cache"] for seen in site.content_requests]
    assert statuses == ["MISS", "HIT", "HIT", "HIT", "HIT"]
    # The key is the request target as sent, query included: the gateway reads the query too
    # (a transfer token in a spelling the configuration's map misses is refused by it).
    assert (await site.get("/premium/story?page=3", session=PLAIN)).status == 200
    assert site.auth_calls() == 2
    assert (await site.get("/premium/story?transfer%54oken=x", session=PLAIN)).status == 303
    assert site.auth_calls() == 3
    assert "transfer" not in site.content_requests[-1]["path_qs"]


CREDENTIALS: dict[str, Callable[[str], dict[str, str]]] = {
    "cookie": lambda token: {"Cookie": f"paywall_session={token}"},
    "header": lambda token: {"X-plenigo-customer-session": token},
    "bearer": lambda token: {"Authorization": f"Bearer {token}"},
}


@pytest.mark.parametrize("channel", list(CREDENTIALS))
async def test_cached_grant_is_not_served_to_anyone_else(
    start_site: StartSite, channel: str
) -> None:
    site = await start_site(CACHED_CONFIG)
    credential = CREDENTIALS[channel]
    assert (await site.get("/premium/story", headers=credential(PLAIN))).status == 200
    assert (await site.get("/premium/story", headers=credential(PLAIN))).status == 200
    assert site.auth_calls() == 1

    # Another subscriber without the right: asked, refused; and refusals are not cached.
    for expected_calls in (2, 3):
        denied = await site.get("/premium/story", headers=credential(NO_RIGHTS))
        assert denied.status == 403
        assert site.auth_calls() == expected_calls
    assert (await site.get("/premium/story")).status == 303
    assert (await site.get("/premium/story", headers=credential(PLAIN + "x"))).status == 303
    assert site.auth_calls() == 5
    # Another page is another decision.
    assert (await site.get("/premium/other", headers=credential(PLAIN))).status == 200
    assert site.auth_calls() == 6
    assert [seen["headers"]["X-Paywall-Auth-Cache"] for seen in site.content_requests] == [
        "MISS",
        "HIT",
        "MISS",
    ]


async def test_concurrent_first_views_make_one_gateway_call(start_site: StartSite) -> None:
    site = await start_site(CACHED_CONFIG)
    # A slow platform keeps the first decision open while the others arrive.
    site.platform.app[STATE].options.latency = 0.3
    views = [site.get("/premium/story", session=PLAIN) for _ in range(5)]
    replies = await asyncio.gather(*views)
    assert [reply.status for reply in replies] == [200] * 5
    assert site.auth_calls() == 1


async def test_cached_grant_expires_with_x_accel_expires(start_site: StartSite) -> None:
    site = await start_site(CACHED_CONFIG, server={"auth_cache_max_seconds": 1})
    started = time.monotonic()
    assert (await site.get("/premium/story", session=PLAIN)).status == 200
    assert (await site.get("/premium/story", session=PLAIN)).status == 200
    assert site.auth_calls() == 1
    deadline = started + 6
    while site.auth_calls() == 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        assert (await site.get("/premium/story", session=PLAIN)).status == 200
    elapsed = time.monotonic() - started
    assert site.auth_calls() == 2, "nginx kept the grant longer than X-Accel-Expires: 1"
    assert elapsed >= 1.0, f"the grant was dropped after {elapsed:.2f}s, before it expired"
    assert site.content_requests[-1]["headers"]["X-Paywall-Auth-Cache"] == "EXPIRED"


# --- platform callbacks -------------------------------------------------------------------------

CALLBACK_SECRET = "nginx-callback-secret-0123456789"


@BOTH_CONFIGS
async def test_callbacks_reach_the_gateway_and_the_secret_no_log(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config, callbacks={"secret": CALLBACK_SECRET})
    # The subscriber's grant is cached by the gateway (and by nginx in the cached variant).
    assert (await site.get("/premium/story", session=PLAIN)).status == 200
    body = json.dumps(
        {"entityType": "CUSTOMER", "callbackType": "CHANGE", "entityId": "100001", "entity": {}}
    )
    url = f"http://127.0.0.1:{site.nginx.port}/_paywall/callbacks/{CALLBACK_SECRET}"
    sent = {"Host": HOST, "Content-Type": "application/json"}
    async with site.http.post(url, data=body, headers=sent) as reply:
        assert reply.status == 200, await reply.text()
    wrong = url.replace(CALLBACK_SECRET, "x" * len(CALLBACK_SECRET))
    async with site.http.post(wrong, data=body, headers=sent) as reply:
        assert reply.status == 404
    async with site.http.post(url, data="x" * 70_000, headers=sent) as reply:
        assert reply.status == 413  # nginx's own limit, before the gateway
    callbacks = sum(
        sample.value
        for metric in site.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "paywall_callbacks_total" and sample.labels.get("result") == "invalidated"
    )
    assert callbacks == 1
    logged = (site.nginx.prefix / "access.log").read_text(encoding="utf-8")
    assert "/premium/story" in logged  # the log is written, but not for callbacks
    assert CALLBACK_SECRET not in logged
    assert "_paywall/callbacks" not in logged
