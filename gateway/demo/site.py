"""The demo content site: public and premium articles, and a stand-in for the login page.

It plays the publisher's content server behind the gateway (proxy mode) and trusts the
``X-Paywall-*`` request headers the gateway sets, so it must be reachable through the gateway
only: it binds 127.0.0.1. ``/login`` stands in for plenigo's login (SSO): it lists the
simulator's seeded customers; for the one chosen it asks the platform for a transfer token and
sends the browser back to ``return_to`` with ``transferToken=<token>`` appended, where the
gateway exchanges the token for a session cookie. ``return_to`` must be a path on this origin
or a URL on one of the gateway's public origins (``--gateway-url``): never an open redirect.

Run: ``python -m gateway.demo.site --port 8000 --platform http://127.0.0.1:8090/api/v3.0``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from urllib.parse import quote, unquote, unquote_plus, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from gateway.cli import port_number
from gateway.resources import sandbox_seed
from gateway.sandbox.data import parse_data

__all__ = [
    "ARTICLES",
    "FEATURED_PREMIUM",
    "Article",
    "DemoCustomer",
    "SiteOptions",
    "create_app",
    "load_demo_customers",
    "main",
    "origin_of",
    "safe_return_to",
    "with_transfer_token",
]

HOST = "127.0.0.1"
DEFAULT_DATA = sandbox_seed()
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
RETURN_PARAM = "return_to"  # the gateway's [server] login_return_param
TRANSFER_TOKEN_PARAM = "transferToken"  # noqa: S105 (a parameter name, not a secret)
CUSTOMER_ID_HEADER = "X-Paywall-Customer-Id"
ACCESS_HEADER = "X-Paywall-Access"
CACHE_HEADER = "X-Paywall-Cache"
# X-Paywall-Access values under which the gateway forwards a protected request.
GRANTED_ACCESS = frozenset({"granted", "fail-open"})
MAX_RETURN_TO = 2048
PLATFORM_TIMEOUT = 5.0


# --- content ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Article:
    """One article; premium ones live under ``/premium/``, the others under ``/articles/``."""

    slug: str
    title: str
    teaser: str
    body: tuple[str, ...]
    premium: bool = False

    @property
    def path(self) -> str:
        return f"/{'premium' if self.premium else 'articles'}/{self.slug}"


ARTICLES: tuple[Article, ...] = (
    Article(
        slug="how-this-demo-works",
        title="How this demo works",
        teaser="Three processes on your machine, one question per request.",
        body=(
            "You are reading a page of a small content site. Your browser did not talk to it "
            "directly: every request went through the paywall gateway, which decided that this "
            "page is public and passed it on.",
            "Articles under /premium/ need the access right \u201cpremium\u201d. For those the "
            "gateway finds out who you are (a transfer token in the URL, or its session cookie), "
            "asks the platform simulator whether that customer holds the right, caches the "
            "answer, and only then forwards the request here.",
            "Without a session the gateway sends you to the login page; with a session but "
            "without the right you see the paywall instead of the article.",
        ),
    ),
    Article(
        slug="harbour-festival",
        title="Harbour festival draws record crowds",
        teaser="Free to read: the weekend in pictures and numbers.",
        body=(
            "More than forty thousand visitors came to the harbour over the weekend, the "
            "organisers said on Sunday evening, more than in any year before.",
            "The tall ships stayed an extra day because of the wind, and the fireworks moved "
            "from Saturday to Sunday night. Public transport ran every ten minutes until 2 a.m.",
        ),
    ),
    Article(
        slug="the-long-read",
        title="The long read: a year inside the city's water works",
        teaser="For subscribers: the people who keep the taps running.",
        premium=True,
        body=(
            "At four in the morning the control room of the water works is the brightest room "
            "in the district. Twelve screens show pressure, flow and reservoir levels; two "
            "engineers watch them, and a kettle that has not been switched off in years.",
            "Over twelve months we followed the crews who repair burst mains in the frost, the "
            "chemists who test a thousand samples a week, and the planners who have to decide "
            "today which pipes will fail in 2040.",
            "\u201cNobody notices us when we do our job,\u201d says the night-shift lead. "
            "\u201cThat is the job.\u201d",
        ),
    ),
    Article(
        slug="market-outlook",
        title="Market outlook: what the rate decision means for you",
        teaser="For subscribers: mortgages, savings and rents after the central bank's move.",
        premium=True,
        body=(
            "The central bank held its rate for the third meeting in a row, but the statement "
            "changed in one sentence, and markets read that sentence as the end of the cycle.",
            "For borrowers with a fixed rate nothing changes this year. Savers should look at "
            "the spread between instant-access accounts and fixed terms, which is the widest "
            "since 2008.",
        ),
    ),
)
FEATURED_PREMIUM: Article = next(article for article in ARTICLES if article.premium)
_PUBLIC = {article.slug: article for article in ARTICLES if not article.premium}
_PREMIUM = {article.slug: article for article in ARTICLES if article.premium}


# --- demo customers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoCustomer:
    """A seeded customer session the login page offers."""

    session_token: str
    customer_id: str
    description: str


def load_demo_customers(path: Path, now: datetime) -> tuple[DemoCustomer, ...]:
    """The sessions of the simulator's seed file that are valid at ``now``, in file order.

    Raises ValueError naming the file when it cannot be read or is not valid seed data.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        data = parse_data(document, now)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    descriptions = {
        str(entry.get("customerId")): str(entry.get("description", ""))
        for entry in document.get("customers", ())
        if isinstance(entry, dict)
    }
    return tuple(
        DemoCustomer(session.token, session.customer_id, descriptions.get(session.customer_id, ""))
        for session in data.sessions.values()
        if session.valid_at(now)
    )


# --- return_to --------------------------------------------------------------------------------

# Raw values: printable ASCII only (no whitespace, which browsers strip, so "/\t/evil.com" is
# "//evil.com" to them) and no backslash (a "/" to browsers in http(s) URLs).
_UNSAFE_RAW = re.compile(r"[^\x21-\x7e]|\\")
# Percent-decoded values: no control characters or backslashes either.
_UNSAFE_DECODED = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` (lower-case, port explicit) of an absolute http(s) URL, else None.

    URLs with user information (``http://trusted@evil.com``) have no origin here.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}:{port}"


def safe_return_to(value: str, allowed_origins: Collection[str]) -> str | None:
    """``value`` when the login may redirect there, else None.

    Allowed: a path on this origin (``/...``, but never ``//host``, which browsers read as
    another host), or an absolute http(s) URL on one of ``allowed_origins`` (as
    :func:`origin_of` gives them). Percent-decoding, once or repeatedly, must not reveal a
    leading ``//``, a backslash or a control character either.
    """
    if not value or len(value) > MAX_RETURN_TO or _UNSAFE_RAW.search(value):
        return None
    decoded = value
    for _ in range(3):
        decoded = unquote(decoded)
        if decoded.startswith("//") or _UNSAFE_DECODED.search(decoded):
            return None
    if value.startswith("/"):
        return value
    origin = origin_of(value)
    return value if origin is not None and origin in allowed_origins else None


def with_transfer_token(url: str, token: str) -> str:
    """``url`` with ``transferToken=<token>`` in its query, replacing any there already."""
    parts = urlsplit(url)
    kept = [
        pair
        for pair in parts.query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) != TRANSFER_TOKEN_PARAM
    ]
    kept.append(f"{TRANSFER_TOKEN_PARAM}={quote(token, safe='')}")
    return urlunsplit(parts._replace(query="&".join(kept)))


# --- pages ------------------------------------------------------------------------------------

_CSS = """
body{margin:0;font:17px/1.6 Georgia,'Times New Roman',serif;color:#222;background:#faf8f5}
header{background:#1d3557;color:#fff;padding:.8rem 1.5rem;font-family:system-ui,sans-serif}
header a{color:#fff;text-decoration:none;margin-right:1.2rem}
header .brand{font-weight:700;font-size:1.15rem}
main{max-width:42rem;margin:2rem auto;padding:0 1.5rem}
h1{font-size:2rem;line-height:1.2;margin:.2rem 0 1rem}
h2{font-family:system-ui,sans-serif;font-size:1.1rem;text-transform:uppercase;
letter-spacing:.05em;color:#555;margin-top:2.2rem}
ul.list{list-style:none;padding:0}ul.list li{margin:0 0 1.1rem}
ul.list a{font-size:1.2rem;color:#1d3557}
.teaser{color:#555;display:block}
.badge{font:600 .75rem system-ui,sans-serif;background:#e63946;color:#fff;border-radius:3px;
padding:.1rem .4rem;margin-left:.4rem;vertical-align:middle}
.note{font:.9rem/1.5 system-ui,sans-serif;background:#eef3f8;border-left:4px solid #1d3557;
padding:.7rem 1rem;margin:1.2rem 0}
.error{border-left-color:#e63946;background:#fbeaea}
.meta{font:.8rem system-ui,sans-serif;color:#777;margin-top:2.5rem}
form.customer{display:flex;align-items:center;gap:1rem;margin:0 0 .8rem;padding:.6rem .8rem;
background:#fff;border:1px solid #ddd;border-radius:4px;font-family:system-ui,sans-serif}
form.customer button{font:600 .9rem system-ui,sans-serif;background:#1d3557;color:#fff;
border:0;border-radius:4px;padding:.45rem .9rem;cursor:pointer;white-space:nowrap}
form.customer small{color:#666;display:block}
code{font-size:.9em}
"""


def _page(title: str, body: str, *, status: int = 200, cache: str = "no-cache") -> web.Response:
    html = (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} \u2014 The Demo Gazette</title><style>{_CSS}</style></head>"
        "<body><header><a class=brand href=/>The Demo Gazette</a>"
        "<a href=/>Articles</a><a href=/login>Log in</a></header>"
        f"<main>{body}</main></body></html>\n"
    )
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": cache, "Referrer-Policy": "same-origin"},
    )


def _error(title: str, message: str, status: int) -> web.Response:
    body = (
        f"<h1>{escape(title)}</h1><p class='note error'>{escape(message)}</p>"
        "<p><a href=/>Home</a></p>"
    )
    return _page(title, body, status=status, cache="no-store")


def _article_list(articles: Sequence[Article]) -> str:
    items = "".join(
        f"<li><a href='{escape(a.path)}'>{escape(a.title)}</a>"
        f"{'<span class=badge>premium</span>' if a.premium else ''}"
        f"<span class=teaser>{escape(a.teaser)}</span></li>"
        for a in articles
    )
    return f"<ul class=list>{items}</ul>"


async def index(request: web.Request) -> web.Response:
    """The front page: every article, public first."""
    public = [a for a in ARTICLES if not a.premium]
    premium = [a for a in ARTICLES if a.premium]
    body = (
        "<h1>Today's articles</h1>"
        "<p class=note>A demo publisher behind the paywall gateway. Public articles open for "
        "everyone; premium ones need the access right <code>premium</code>. "
        "<a href=/login>Log in</a> as one of the simulator's demo customers to try both.</p>"
        f"<h2>Free to read</h2>{_article_list(public)}"
        f"<h2>Premium</h2>{_article_list(premium)}"
    )
    return _page("Today's articles", body)


def _article_body(article: Article) -> str:
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in article.body)
    badge = "<span class=badge>premium</span>" if article.premium else ""
    return f"<h1>{escape(article.title)}{badge}</h1>{paragraphs}"


async def public_article(request: web.Request) -> web.Response:
    """GET /articles/{slug}: a free article."""
    article = _PUBLIC.get(request.match_info["slug"])
    if article is None:
        return _error("Not found", "There is no such article.", 404)
    return _page(article.title, _article_body(article))


async def premium_article(request: web.Request) -> web.Response:
    """GET /premium/{slug}: served only when the gateway says access is granted."""
    article = _PREMIUM.get(request.match_info["slug"])
    if article is None:
        return _error("Not found", "There is no such article.", 404)
    access = request.headers.get(ACCESS_HEADER, "")
    if access not in GRANTED_ACCESS:
        # Reached without the gateway's decision: the gateway must be the only way in.
        return _error(
            "Subscribers only",
            "Premium articles are served through the paywall gateway only.",
            403,
        )
    customer = request.headers.get(CUSTOMER_ID_HEADER, "")
    greeting = (
        f"Welcome back, subscriber {escape(customer)}. Thank you for reading."
        if customer
        else "Welcome back, subscriber."
    )
    notice = (
        " The platform could not be asked just now; the gateway let you in (fail-open)."
        if access == "fail-open"
        else ""
    )
    cache = request.headers.get(CACHE_HEADER, "")
    meta = (
        f"<p class=meta>Gateway decision: access {escape(access)}"
        f"{', cache ' + escape(cache) if cache else ''}. Reload: the answer now comes from "
        "the gateway's cache, without a platform call.</p>"
    )
    body = f"<p class=note>{greeting}{notice}</p>{_article_body(article)}{meta}"
    return _page(article.title, body, cache="private, no-store")


# --- login ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteOptions:
    """The platform to ask for transfer tokens, the customers on offer, where login may return.

    ``allowed_origins`` are as :func:`origin_of` gives them.
    """

    platform_url: str
    customers: tuple[DemoCustomer, ...]
    allowed_origins: frozenset[str]
    api_token: str | None = None


SITE_OPTIONS = web.AppKey("site_options", SiteOptions)
PLATFORM_SESSION = web.AppKey("platform_session", aiohttp.ClientSession)


class PlatformProblem(Exception):
    """The platform did not issue a transfer token; the message is for the visitor."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def request_transfer_token(
    session: aiohttp.ClientSession, options: SiteOptions, customer_session: str
) -> str:
    """POST /sessions/transferToken for ``customer_session``; PlatformProblem when refused."""
    headers = {"X-plenigo-token": options.api_token} if options.api_token else {}
    url = options.platform_url.rstrip("/") + "/sessions/transferToken"
    try:
        async with session.post(
            url, json={"customerSession": customer_session}, headers=headers
        ) as response:
            if response.status == 401:
                raise PlatformProblem("The platform says this session is not valid.", 409)
            if response.status != 200:
                raise PlatformProblem(f"The platform answered {response.status}.", 502)
            payload = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise PlatformProblem("The platform could not be reached.", 502) from None
    token = payload.get("transferToken") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise PlatformProblem("The platform's answer carried no transfer token.", 502)
    return token


def _bad_return_to() -> web.Response:
    return _error(
        "Not allowed",
        "The address to return to after logging in is not on this site.",
        400,
    )


async def login_page(request: web.Request) -> web.Response:
    """GET /login?return_to=…: the seeded customers, one button each."""
    options = request.app[SITE_OPTIONS]
    return_to = safe_return_to(request.query.get(RETURN_PARAM, "/"), options.allowed_origins)
    if return_to is None:
        return _bad_return_to()
    forms = "".join(
        "<form class=customer method=post action=/login>"
        f"<input type=hidden name=session value='{escape(c.session_token)}'>"
        f"<input type=hidden name={RETURN_PARAM} value='{escape(return_to)}'>"
        f"<button type=submit>Log in</button><span>Customer {escape(c.customer_id)} "
        f"(<code>{escape(c.session_token)}</code>)<small>{escape(c.description)}</small></span>"
        "</form>"
        for c in options.customers
    )
    body = (
        "<h1>Log in</h1>"
        "<p class=note>This page stands in for plenigo's login. Pick a demo customer: the site "
        "asks the platform for a one-time transfer token and sends you back to "
        f"<code>{escape(return_to)}</code>, where the gateway turns the token into a session "
        "cookie. <code>demo-session-plain</code> holds <code>premium</code>; "
        "<code>demo-session-no-rights</code> holds nothing and sees the paywall.</p>"
        f"{forms}"
    )
    return _page("Log in", body, cache="no-store")


async def login(request: web.Request) -> web.Response:
    """POST /login (session, return_to): a transfer token, then 303 to return_to with it."""
    options = request.app[SITE_OPTIONS]
    form = await request.post()
    return_value = form.get(RETURN_PARAM, "/")
    if not isinstance(return_value, str):
        return _bad_return_to()
    return_to = safe_return_to(return_value, options.allowed_origins)
    if return_to is None:
        return _bad_return_to()
    chosen = form.get("session")
    customer = next((c for c in options.customers if c.session_token == chosen), None)
    if customer is None:
        return _error("Unknown customer", "Pick one of the demo customers.", 400)
    try:
        token = await request_transfer_token(
            request.app[PLATFORM_SESSION], options, customer.session_token
        )
    except PlatformProblem as problem:
        return _error("Login failed", str(problem), problem.status)
    raise web.HTTPSeeOther(
        with_transfer_token(return_to, token),
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


# --- wiring -----------------------------------------------------------------------------------


async def _platform_session(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=PLATFORM_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[PLATFORM_SESSION] = session
        yield


def create_app(options: SiteOptions) -> web.Application:
    """The demo site as an aiohttp app."""
    app = web.Application()
    app[SITE_OPTIONS] = options
    app.cleanup_ctx.append(_platform_session)
    app.router.add_get("/", index)
    app.router.add_get("/articles/{slug}", public_article)
    app.router.add_get("/premium/{slug}", premium_article)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo.site",
        description="The demo content site (runs behind the gateway; listens on 127.0.0.1).",
    )
    parser.add_argument(
        "--port", type=port_number, default=8000, help="port (%(default)s; 0 = any)"
    )
    parser.add_argument(
        "--platform",
        default="http://127.0.0.1:8090/api/v3.0",
        help="platform API base URL, for transfer tokens (%(default)s)",
    )
    parser.add_argument("--api-token", default=None, help="X-plenigo-token for the platform")
    parser.add_argument(
        "--gateway-url",
        action="append",
        default=None,
        metavar="URL",
        help="public origin of the gateway that login may return to; repeatable "
        f"(default: {DEFAULT_GATEWAY_URL})",
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="seed data file (the customers on offer)"
    )
    return parser


async def _serve(app: web.Application, port: int, platform: str) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port).start()
        bound = runner.addresses[0][1]
        print(f"demo site: http://{HOST}:{bound} (platform {platform})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT / SIGTERM; 2 with a message when the site cannot start."""
    args = build_parser().parse_args(argv)
    origins = [origin_of(url) for url in args.gateway_url or [DEFAULT_GATEWAY_URL]]
    platform_origin = origin_of(args.platform)
    if platform_origin is None or None in origins:
        print("demo site: --platform and --gateway-url need http(s) URLs", file=sys.stderr)
        return 2
    try:
        customers = load_demo_customers(args.data, datetime.now(UTC))
    except ValueError as exc:
        print(f"demo site: {exc}", file=sys.stderr)
        return 2
    options = SiteOptions(
        platform_url=args.platform,
        customers=customers,
        allowed_origins=frozenset(o for o in origins if o is not None),
        api_token=args.api_token,
    )
    try:
        asyncio.run(_serve(create_app(options), args.port, args.platform))
    except OSError as exc:
        print(f"demo site: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
