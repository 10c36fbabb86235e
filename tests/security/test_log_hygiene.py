"""No credential reaches a log, and no client can flood one.

* Requests the gateway's HTTP parser refuses (a control character in a header, an over-long
  header, too many headers, garbage), carrying a token in spellings a redactor could miss
  (``paywall_session="T"``, ``paywall_session =T``, ``?transfer%54oken=T``): aiohttp used to
  log each at ERROR with a traceback and the raw bytes, and to echo them in the 400 body. Now:
  at most one short line per request, without traceback, token or any of the raw bytes; a
  400 body without them either (``paywall-gateway serve`` as a real process, both modes; and
  the application as the tests run it, both modes).
* A flood of them: at most ``LINES_PER_SECOND`` lines a second, every refused request
  accounted for (written, or counted in the next line's ``suppressed``).
* nginx (both shipped configurations): the access log, written with the configuration's own
  format, holds no transfer token in any spelling the gateway accepts; the content server
  never receives a Referer holding one.

Which spellings the gateway accepts is asked of the gateway's own readers
(``gateway.http.credentials``), so a spelling it does not accept cannot pass for one here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, LineTooLong

from gateway.http.credentials import query_values
from gateway.web.protocol import LINES_PER_SECOND, LOGGER_NAME, ProtocolErrorFilter, describe
from tests.deploy.test_nginx import ACCESS_LOG_FILE, BOTH_CONFIGS, HOST, StartSite
from tests.security.test_bad_input_nginx import exchange, request_bytes
from tests.test_serve import (
    Running,
    StartGateway,
    start_gateway,
    upstream,
)
from tests.web.conftest import StartStack

__all__ = ["start_gateway", "upstream"]  # fixtures, used by name

SECRET = "SeCrEt4242"
# Bytes that must never be echoed (they stand for whatever a client sends).
MARKER = b"MARKER-7b3f"

# Requests the parser refuses, each with a credential in a spelling of its own.
MALFORMED = {
    "quoted-cookie-and-control-char": (
        b'GET /news HTTP/1.1\r\nHost: h\r\nCookie: paywall_session="' + SECRET.encode() + b'"\r\n'
        b"X-Note: " + MARKER + b"\x01\r\n\r\n"
    ),
    "spaced-cookie-and-del": (
        b"GET /news HTTP/1.1\r\nHost: h\r\nCookie: paywall_session =" + SECRET.encode() + b"\r\n"
        b"User-Agent: " + MARKER + b"\x7f\r\n\r\n"
    ),
    "encoded-param-and-escape": (
        b"GET /news?transfer%54oken=" + SECRET.encode() + b" HTTP/1.1\r\nHost: h\r\n"
        b"X-Note: " + MARKER + b"\x1b[31m\r\n\r\n"
    ),
    "original-uri-and-bad-header-name": (
        b"GET /_paywall/auth HTTP/1.1\r\nHost: h\r\n"
        b"X-Original-URI: /premium/a?TRANSFERTOKEN=" + SECRET.encode() + b"\r\n"
        b"Bad Header" + MARKER + b": x\r\n\r\n"
    ),
    "long-cookie-line": (
        b"GET /news HTTP/1.1\r\nHost: h\r\nCookie: paywall%5Fsession="
        + SECRET.encode()
        + MARKER * 1000
        + b"\r\n\r\n"
    ),
    "too-many-headers": (
        b"GET /news HTTP/1.1\r\nHost: h\r\nCookie: PAYWALL_SESSION="
        + SECRET.encode()
        + b"\r\n"
        + b"X-"
        + MARKER
        + b": 1\r\n" * 1100
        + b"\r\n"
    ),
}


def protocol_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("logger") == LOGGER_NAME]


def assert_clean(text: str) -> None:
    assert SECRET not in text
    assert MARKER.decode() not in text
    assert "Traceback" not in text


@pytest.fixture
def fresh_filter() -> Iterator[ProtocolErrorFilter]:
    """The protocol logger's filter, reset: its rate limit is per process, and other tests
    may just have used it up."""
    logger = logging.getLogger(LOGGER_NAME)
    saved = logger.filters[:]
    fresh = ProtocolErrorFilter()
    logger.filters[:] = [fresh]
    try:
        yield fresh
    finally:
        logger.filters[:] = saved


# --- the gateway as a process -------------------------------------------------------------------


async def wait_for_lines(running: Running, count: int, within: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = protocol_lines(running.process.records())
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return protocol_lines(running.process.records())


@pytest.mark.parametrize("mode", ["proxy", "auth_request"])
async def test_refused_request_is_one_short_line_and_a_plain_400(
    start_gateway: StartGateway, mode: str
) -> None:
    running = await start_gateway(mode=mode)
    for index, (name, raw) in enumerate(MALFORMED.items()):
        if index and index % LINES_PER_SECOND == 0:
            await asyncio.sleep(1.05)  # below the rate limit: every request gets its line
        reply = await exchange(running.port, raw)
        assert reply.status == 400, name
        body = reply.body.decode("latin-1")
        assert body.startswith("Bad request: malformed HTTP request ("), (name, body)
        assert_clean(body)
    lines = await wait_for_lines(running, len(MALFORMED))
    # One line per refused request, nothing else.
    assert len(lines) == len(MALFORMED), running.process.stderr
    for line in lines:
        assert line["level"] == "info"
        assert line["msg"].startswith("bad request from client: ")
        assert len(line["msg"]) < 120
        assert "exc" not in line
        assert line["client"] == "127.0.0.1"
    assert_clean(running.process.stderr)
    assert "error" not in {record["level"] for record in running.process.records()}


async def test_a_flood_of_refused_requests_is_rate_limited(start_gateway: StartGateway) -> None:
    running = await start_gateway(mode="auth_request")
    bad = b"GET /news HTTP/1.1\r\nHost: h\r\nX-Note: " + MARKER + b"\x01\r\n\r\n"
    flood = 500
    started = time.monotonic()
    for batch in range(0, flood, 50):
        replies = await asyncio.gather(
            *(exchange(running.port, bad) for _ in range(batch, min(batch + 50, flood)))
        )
        assert {reply.status for reply in replies} == {400}
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.1)  # a new window: the next line reports what was left out
    await exchange(running.port, bad)
    lines = await wait_for_lines(running, 1)
    await asyncio.sleep(0.2)
    lines = protocol_lines(running.process.records())
    windows = int(elapsed) + 2 + 1  # the flood's windows, and the last request's own
    assert len(lines) <= LINES_PER_SECOND * windows, (len(lines), elapsed)
    suppressed = [line.get("suppressed", 0) for line in lines]
    assert sum(suppressed) > 0
    # Every refused request is accounted for: written, or counted as suppressed by a later line
    # (the last request, in a window of its own, reports what the flood's last window left out;
    # which line reports a count depends on where the one-second windows fell).
    assert len(lines) + sum(suppressed) == flood + 1
    assert_clean(running.process.stderr)


@pytest.mark.parametrize("mode", ["proxy", "auth_request"])
async def test_access_lines_hold_no_credential(start_gateway: StartGateway, mode: str) -> None:
    # The access log is formatted off the request path, with the logging module's redaction:
    # a credential in the path, in a callback's path or in the query never reaches a line.
    running = await start_gateway(mode=mode)
    targets = [
        f"/a/transferToken={SECRET}",
        f"/a/transfer%54oken%3D{SECRET}",
        f"/a;paywall_session={SECRET}",
        f"/_paywall/callbacks/{SECRET}",
        f"/_paywall/%63allbacks/{SECRET}",
        *(f"/news?{query}" for query in QUERIES),
    ]
    original = b"X-Original-URI" if mode == "auth_request" else b"X-Note"
    for target in targets:
        raw = request_bytes(
            "/_paywall/auth" if mode == "auth_request" else target,
            [(original, target.encode())],
            session=SECRET,
        )
        assert (await exchange(running.port, raw)).status < 500, target
    running.process.proc.send_signal(signal.SIGTERM)
    assert await running.process.wait(within=10) == 0, running.process.stderr
    access = [r for r in running.process.records() if r.get("logger") == "gateway.access"]
    assert_clean(running.process.stderr)
    paths = [r["path"] for r in access]
    redacted = ["/a/transferToken=[redacted]", "/a/transferToken%3D[redacted]"]
    if mode == "proxy":  # the callback paths are internal ones here: a 404, no line
        assert paths == [*redacted, "/a;paywall_session=[redacted]"] + ["/news"] * len(QUERIES)
    else:  # the original URI's path, or (no usable one) the auth endpoint's
        callbacks = ["/_paywall/callbacks/[redacted]"] * 2
        auth = ["/_paywall/auth"] * len(QUERIES)
        assert paths == [*redacted, "/_paywall/auth", *callbacks, *auth]


# --- the application as the tests run it (create_app's handler_args) ----------------------------


@pytest.mark.parametrize("mode", ["proxy", "auth_request"])
@pytest.mark.usefixtures("fresh_filter")
async def test_app_logs_refused_requests_without_bytes(
    start_stack: StartStack, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    stack = await start_stack(server={"mode": mode})
    assert stack.gateway.port is not None
    caplog.set_level(logging.INFO)
    for name, raw in list(MALFORMED.items())[:LINES_PER_SECOND]:
        caplog.clear()
        reply = await exchange(stack.gateway.port, raw)
        assert reply.status == 400, name
        records = [r for r in caplog.records if r.name == LOGGER_NAME]
        assert len(records) == 1, (name, [r.getMessage() for r in caplog.records])
        (record,) = records
        assert record.levelno == logging.INFO
        assert record.exc_info is None
        assert record.getMessage().startswith("bad request from client: ")
        assert_clean(caplog.text)
        assert not [r for r in caplog.records if r.name == "aiohttp.server"]


# --- the filter on its own ----------------------------------------------------------------------


def parser_record(exc: BaseException) -> logging.LogRecord:
    """A record as aiohttp's request handler makes it for a refused request."""
    record = logging.LogRecord(
        LOGGER_NAME,
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        (type(exc), exc, None),
    )
    return record


PARSER_ERRORS = [
    BadHttpMessage(
        "Invalid header value char:\n\n  b'Cookie: paywall_session=\"" + SECRET + "\"'\n     ^"
    ),
    LineTooLong(b"paywall_session=" + SECRET.encode() + b"...", 8320),
    # Not a description (the Python parser's message holds the line): only the class is kept.
    BadStatusLine(f"GET /a?transferToken={SECRET} HTTP/1.1"),
    BadHttpMessage(f"{SECRET} and more words"),
]


@pytest.mark.parametrize(
    "exc", PARSER_ERRORS, ids=["llhttp", "line-too-long", "status-line", "token-first"]
)
def test_describe_keeps_no_input(exc: BaseException) -> None:
    assert SECRET not in describe(exc)
    assert describe(exc).startswith(type(exc).__name__)


def test_filter_rewrites_and_rate_limits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    now = [100.0]
    rate = ProtocolErrorFilter(per_second=3, clock=lambda: now[0])
    passed = []
    for _ in range(10):
        record = parser_record(PARSER_ERRORS[0])
        if rate.filter(record):
            passed.append(record)
    assert len(passed) == 3
    for record in passed:
        assert record.exc_info is None
        assert record.levelno == logging.INFO
        assert record.getMessage() == (
            "bad request from client: BadHttpMessage: Invalid header value char"
        )
        assert record.__dict__["fields"] == {"client": "127.0.0.1"}
    now[0] += 1.0
    record = parser_record(PARSER_ERRORS[1])
    assert rate.filter(record)
    assert record.__dict__["fields"] == {"client": "127.0.0.1", "suppressed": 7}
    # The gateway's own errors keep their traceback and are not limited.
    own = logging.LogRecord(
        LOGGER_NAME, logging.ERROR, __file__, 1, "boom", (), (ValueError, ValueError(), None)
    )
    for _ in range(10):
        assert rate.filter(own)
    assert own.exc_info is not None
    assert own.levelno == logging.ERROR


# --- nginx: the access log and the content server's Referer --------------------------------------

# The transfer-token parameter as a query may spell it; each is checked against the gateway's
# own reader below, so only spellings the gateway accepts are here.
TOKEN_SPELLINGS = [
    "transferToken",
    "TRANSFERTOKEN",
    "transfertoken",
    "transfer%54oken",
    "%74ransfer%54oken",
    "%74%72%61%6e%73%66%65%72%74%6f%6b%65%6e",
    "tran%C5%BFferToken",  # long s, case-folds to "s"
    "transferto%E2%84%AAen",  # Kelvin sign, case-folds to "k"
]
QUERIES = [f"{name}={SECRET}" for name in TOKEN_SPELLINGS] + [
    f"utm=mail&{TOKEN_SPELLINGS[3]}={SECRET}",
    f"utm=mail;transferToken={SECRET}",
]


@pytest.mark.parametrize("query", QUERIES)
def test_spellings_are_the_gateways(query: str) -> None:
    assert query_values(query, "transferToken") == [SECRET]


@BOTH_CONFIGS
async def test_nginx_access_log_holds_no_transfer_token(start_site: StartSite, config: str) -> None:
    site = await start_site(config)
    targets = [f"/news?{query}" for query in QUERIES] + [f"/premium/a?{q}" for q in QUERIES[:3]]
    for target in targets:
        reply = await site.get(target, headers={"Referer": f"http://{HOST}/x?{QUERIES[3]}"})
        assert reply.status in (303, 400), (target, reply.status)
    # Raw UTF-8 (the long s) in the request line, as a client may send it.
    raw = (
        b"GET /news?tran\xc5\xbfferToken=" + SECRET.encode() + b" HTTP/1.1\r\n"
        b"Host: " + HOST.encode() + b"\r\nConnection: close\r\n\r\n"
    )
    assert (await exchange(site.nginx.port, raw)).status == 303
    assert (await site.get("/news?page=2")).status == 200  # an ordinary query stays
    log = await _access_log(site.nginx.prefix, len(targets) + 2)
    assert SECRET not in log
    lines = log.splitlines()
    assert len(lines) == len(targets) + 2
    assert sum('?[redacted] HTTP/1.1"' in line for line in lines) == len(targets) + 1
    assert '"GET /news?page=2 HTTP/1.1" 200' in lines[-1]
    assert site.content_requests[-1]["path_qs"] == "/news?page=2"


async def _access_log(prefix: Path, lines: int, within: float = 5.0) -> str:
    path = prefix / ACCESS_LOG_FILE
    deadline = time.monotonic() + within
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if len(text.splitlines()) >= lines:
            break
        await asyncio.sleep(0.05)
    return text


REFERERS = {
    # Referer sent -> Referer the content server must get (None: none at all).
    f"http://{HOST}/premium/x?a=1": f"http://{HOST}/premium/x?a=1",
    **{f"http://{HOST}/premium/x?{query}&a=1": f"http://{HOST}/premium/x" for query in QUERIES},
    f"http://{HOST}/premium/x?return_to=%2Fp%3Ftransfer%2554oken%3D{SECRET}": (
        f"http://{HOST}/premium/x"
    ),
    f"http://{HOST}/premium/x;transferToken={SECRET}": None,
}


@BOTH_CONFIGS
async def test_content_server_gets_no_referer_with_a_transfer_token(
    start_site: StartSite, config: str
) -> None:
    site = await start_site(config)
    for sent, expected in REFERERS.items():
        reply = await site.get("/news", headers={"Referer": sent})
        assert reply.status == 200
        got = site.content_requests[-1]["headers"].get("Referer")
        assert got == expected, (sent, got)
    assert SECRET not in str(site.content_requests)
    assert SECRET not in (site.nginx.prefix / ACCESS_LOG_FILE).read_text(encoding="utf-8")
