"""Bad or merely big client input gets the visitor what proxy mode gives, never a 503.

Behind nginx, whatever the gateway's HTTP parser refused used to reach the visitor as the
"Temporarily unavailable" page: ``auth_request`` turns an auth answer other than 2xx / 401 /
403 into a 500, which the configurations sent to @paywall_unavailable; and a long URL made the
login redirect's Location overflow nginx's buffer for upstream headers (502, then the 503 page).
Each case runs through both shipped nginx configurations and through proxy mode, with raw
bytes on a socket (aiohttp's client refuses to send control characters):

* a control character (``\\x01``, ``\\x7f``, ``\\x1b``) in a header value, on a public and a
  premium page: 400, and the content server is not asked;
* 150, 300 and nearly 1000 headers (nginx refuses more than 1000 lines): the normal answer,
  the 303 to the login with the full ``return_to`` or the content;
* a URL of 3.9 KB, 6 KB and the longest nginx accepts, made of characters that percent-encoding
  triples: the normal 303 with the full ``return_to`` (about 25 KB of Location), the content on
  a public page, the transfer-token hand-off's 303 and cookie; longer than nginx accepts:
  nginx's own 414 / 400, never a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.deploy.test_nginx import (
    CACHED_CONFIG,
    CONTENT_SERVER_LIMITS,
    HOST,
    LOGIN_URL,
    PLAIN,
    PLAIN_CONFIG,
    StartSite,
)
from tests.web.conftest import CONTENT_LOG, StartStack, content_app

FRONTS = pytest.mark.parametrize("front", [PLAIN_CONFIG, CACHED_CONFIG, "proxy"])
CONTROL_CHARACTERS = [b"\x01", b"\x7f", b"\x1b"]
PUBLIC = "/news/today"
PREMIUM = "/premium/story"
# The longest request target nginx 1.22 accepts in "GET <target> HTTP/1.1\r\n" (8192 bytes).
NGINX_MAX_TARGET = 8177
# Header lines nginx accepts in one request, Host included.
NGINX_MAX_HEADER_LINES = 1000
TIMEOUT = 20.0


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------


@dataclass
class RawReply:
    status: int
    headers: CIMultiDict[str]
    body: bytes


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


async def exchange(port: int, request: bytes) -> RawReply:
    """Sends ``request`` as is and reads the answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawReply(int(status_line.split()[1]), headers, body)


def request_bytes(
    target: str | bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    session: str | None = None,
) -> bytes:
    """A GET for ``target`` (Host news.example, the connection closed after it)."""
    raw_target = target.encode("ascii") if isinstance(target, str) else target
    lines = [b"GET " + raw_target + b" HTTP/1.1", b"Host: " + HOST.encode()]
    if session is not None:
        lines.append(b"Cookie: paywall_session=" + session.encode())
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


# --- the three fronts ---------------------------------------------------------------------------


@dataclass
class Front:
    """What a visitor talks to: nginx with a shipped configuration, or the gateway itself."""

    name: str
    port: int
    content: TestServer
    transfer_token: Callable[[str], Awaitable[str]]

    @property
    def content_requests(self) -> list[dict[str, Any]]:
        return self.content.app[CONTENT_LOG].requests

    async def get(
        self,
        target: str | bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        session: str | None = None,
    ) -> RawReply:
        return await exchange(self.port, request_bytes(target, headers, session=session))


StartFront = Callable[[str], Awaitable[Front]]


@pytest.fixture
def start_front(aiohttp_server: Any, start_site: StartSite, start_stack: StartStack) -> StartFront:
    async def start(front: str) -> Front:
        if front == "proxy":
            # The stack's own content server keeps aiohttp's limits (128 headers); this one, like
            # the nginx tests' content server, accepts what a front end passes on.
            content = await aiohttp_server(content_app(), **CONTENT_SERVER_LIMITS)
            stack = await start_stack(
                server={"upstream": str(content.make_url("/")), "allowed_redirect_hosts": [HOST]}
            )

            async def stack_token(session: str) -> str:
                return await stack.transfer_token(session)

            assert stack.gateway.port is not None
            return Front(front, stack.gateway.port, content, stack_token)
        site = await start_site(front)
        return Front(front, site.nginx.port, site.content, site.transfer_token)

    return start


def login_location(target: str) -> str:
    return f"{LOGIN_URL}?return_to={quote(f'http://{HOST}{target}', safe='')}"


def long_target(path: str, length: int) -> str:
    """``path`` with a query up to ``length`` characters in all, of characters percent-encoding
    triples ("/", "=", "&"): the longest return_to such a URL can make."""
    head = f"{path}?k="
    filler = ("/=&" * length)[: length - len(head) - 1] + "z"
    return head + filler


# --- control characters ---------------------------------------------------------------------------


@FRONTS
async def test_control_character_in_a_header_value_is_a_400(
    start_front: StartFront, front: str
) -> None:
    site = await start_front(front)
    for char in CONTROL_CHARACTERS:
        cases = {
            "X-Note": b"a" + char + b"b",
            "User-Agent": b"agent/" + char,
            "Cookie": b"paywall_session=" + PLAIN.encode() + b"; theme=" + char + b"dark",
        }
        for page in (PUBLIC, PREMIUM):
            for name, value in cases.items():
                reply = await site.get(page, [(name.encode(), value)])
                assert reply.status == 400, (front, char, page, name, reply.status, reply.body)
    assert site.content_requests == []
    # The same requests without the control character are answered normally.
    assert (await site.get(PUBLIC, [(b"X-Note", b"ab")])).status == 200
    assert (await site.get(PREMIUM, session=PLAIN)).status == 200


# --- many headers ---------------------------------------------------------------------------------


@FRONTS
@pytest.mark.parametrize("count", [150, 300, NGINX_MAX_HEADER_LINES - 3])
async def test_many_headers_get_the_normal_answer(
    start_front: StartFront, front: str, count: int
) -> None:
    # Host, Connection and (for the subscriber) Cookie are three more: up to nginx's 1000.
    site = await start_front(front)
    headers = [(f"X-Extra-{i}".encode(), b"1") for i in range(count)]
    anonymous = await site.get(PREMIUM, headers)
    assert anonymous.status == 303, (anonymous.status, anonymous.body[:300])
    assert anonymous.headers["Location"] == login_location(PREMIUM)
    public = await site.get(PUBLIC, headers)
    assert public.status == 200, (public.status, public.body[:300])
    subscriber = await site.get(PREMIUM, headers, session=PLAIN)
    assert subscriber.status == 200, (subscriber.status, subscriber.body[:300])
    seen = [request["headers"] for request in site.content_requests]
    assert [sum(name.startswith("X-Extra-") for name in h) for h in seen] == [count, count]


@FRONTS
async def test_more_headers_than_nginx_accepts_is_a_400(
    start_front: StartFront, front: str
) -> None:
    site = await start_front(front)
    headers = [(f"X-Extra-{i}".encode(), b"1") for i in range(NGINX_MAX_HEADER_LINES + 100)]
    for page in (PUBLIC, PREMIUM):
        reply = await site.get(page, headers)
        assert reply.status == 400, (page, reply.status, reply.body[:300])
    assert site.content_requests == []


# --- long URLs ------------------------------------------------------------------------------------


@FRONTS
@pytest.mark.parametrize("length", [3900, 6000, NGINX_MAX_TARGET])
async def test_long_url_gets_the_normal_answer(
    start_front: StartFront, front: str, length: int
) -> None:
    site = await start_front(front)
    premium = long_target(PREMIUM, length)
    assert len(premium) == length
    anonymous = await site.get(premium)
    assert anonymous.status == 303, (anonymous.status, anonymous.body[:300])
    location = anonymous.headers["Location"]
    assert location == login_location(premium)  # the whole URL, about 3 times as long
    assert len(location) > 2.9 * length

    public = long_target(PUBLIC, length)
    reply = await site.get(public)
    assert reply.status == 200, (reply.status, reply.body[:300])
    subscriber = await site.get(premium, session=PLAIN)
    assert subscriber.status == 200, (subscriber.status, subscriber.body[:300])
    assert [seen["path_qs"] for seen in site.content_requests] == [public, premium]


@FRONTS
async def test_long_url_with_a_transfer_token_is_handed_off(
    start_front: StartFront, front: str
) -> None:
    # The hand-off answers with the URL without the token and a session cookie, both long.
    site = await start_front(front)
    token = await site.transfer_token(PLAIN)
    suffix = f"&transferToken={token}"
    target = long_target(PREMIUM, NGINX_MAX_TARGET - len(suffix)) + suffix
    reply = await site.get(target)
    assert reply.status == 303, (reply.status, reply.body[:300])
    assert reply.headers["Location"] == target.removesuffix(suffix)
    assert reply.headers["Set-Cookie"].startswith(f"paywall_session={PLAIN}; ")
    assert site.content_requests == []


@FRONTS
async def test_more_than_nginx_accepts_is_refused_never_a_503(
    start_front: StartFront, front: str
) -> None:
    site = await start_front(front)
    over = long_target(PREMIUM, NGINX_MAX_TARGET + 1 if front != "proxy" else 9000)
    too_long = await site.get(over)
    # nginx: 414 Request-URI Too Large; the gateway in proxy mode: its parser's 400.
    assert too_long.status == (400 if front == "proxy" else 414), too_long.status
    long_header = await site.get(PUBLIC, [(b"X-Note", b"a" * 9000)])
    assert long_header.status == 400, long_header.status
    assert site.content_requests == []
