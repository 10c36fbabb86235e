"""Proxy mode end to end: visitor -> gateway -> (simulator) -> content server, all on loopback."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import AccessCapture
from tests.web.conftest import CONTENT_CACHE_CONTROL, StartStack

PLAIN = {"Cookie": "paywall_session=demo-session-plain"}
NO_RIGHTS = {"Cookie": "paywall_session=demo-session-no-rights"}
JSON = {"Accept": "application/json"}


async def test_public_page_is_forwarded_without_asking_the_platform(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    response = await stack.get("/news/today?page=2", headers=PLAIN)
    assert response.status == 200
    seen = stack.content_requests[-1]
    assert seen["path_qs"] == "/news/today?page=2"
    assert seen["headers"]["X-Paywall-Access"] == "public"
    assert "X-Paywall-Customer-Id" not in seen["headers"]
    assert response.headers["Cache-Control"] == CONTENT_CACHE_CONTROL  # public: the site's call
    assert stack.platform_calls("validate_session") == 0
    assert stack.platform_calls("has_access") == 0


async def test_subscriber_reaches_premium_content_with_the_decision_in_headers(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    headers = {"Cookie": "theme=dark; paywall_session=demo-session-plain; lang=de"}
    first = await stack.get("/premium/story", headers=headers)
    second = await stack.get("/premium/story", headers=headers)
    assert (first.status, second.status) == (200, 200)
    # Paid content: a CDN in front of the gateway must not keep it for the next visitor.
    assert first.headers.getall("Cache-Control") == ["private, max-age=60"]
    seen = [request["headers"] for request in stack.content_requests]
    assert [h["X-Paywall-Cache"] for h in seen] == ["miss", "hit"]
    assert {h["X-Paywall-Customer-Id"] for h in seen} == {"100001"}
    assert {h["X-Paywall-Access"] for h in seen} == {"granted"}
    # The session cookie stays at the gateway; the site's own cookies pass.
    assert {h["Cookie"] for h in seen} == {"theme=dark; lang=de"}
    assert stack.platform_calls("has_access") == 1
    assert stack.metrics.value("paywall_requests_total", {"mode": "proxy", "outcome": "granted"})
    assert stack.metrics.value("paywall_decision_seconds_count") == 2


async def test_session_token_is_forwarded_only_when_configured(start_stack: StartStack) -> None:
    stack = await start_stack(server={"forward_session_token": True})
    response = await stack.get("/premium/story", headers=PLAIN)
    assert response.status == 200
    assert stack.content_requests[-1]["headers"]["Cookie"] == "paywall_session=demo-session-plain"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"X-plenigo-customer-session": "demo-session-plain"}, 200, id="header"),
        pytest.param({"Authorization": "Bearer demo-session-plain"}, 200, id="bearer"),
        pytest.param(
            {**NO_RIGHTS, "X-plenigo-customer-session": "demo-session-plain"}, 403, id="cookie-wins"
        ),
        pytest.param(
            {
                "X-plenigo-customer-session": "demo-session-no-rights",
                "Authorization": "Bearer demo-session-plain",
            },
            403,
            id="header-beats-bearer",
        ),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, 303, id="basic-is-no-session"),
    ],
)
async def test_credential_precedence(
    start_stack: StartStack, headers: dict[str, str], expected: int
) -> None:
    stack = await start_stack()
    response = await stack.get("/premium/story", headers=headers)
    assert response.status == expected


async def test_denied_visitor_gets_the_paywall_page_or_json(start_stack: StartStack) -> None:
    stack = await start_stack()
    page = await stack.get("/premium/story", headers=NO_RIGHTS)
    assert page.status == 403
    assert page.content_type == "text/html"
    text = await page.text()
    assert "Subscribers only" in text
    assert "/premium/story" in text
    assert page.headers["Cache-Control"] == "no-store"
    as_json = await stack.get("/premium/story", headers={**NO_RIGHTS, **JSON})
    assert as_json.status == 403
    assert await as_json.json() == {
        "error": "access_denied",
        "reason": "platform_denied",
        "status": 403,
    }
    assert stack.content_requests == []


async def test_paywall_template_can_be_replaced(start_stack: StartStack, tmp_path: object) -> None:
    from pathlib import Path

    template = Path(str(tmp_path)) / "mine.html"
    template.write_text("<p>$title for <b>$path</b> ($reason)</p>$login_link", encoding="utf-8")
    stack = await start_stack(server={"paywall_template": str(template)})
    page = await stack.get("/premium/<script>", headers=NO_RIGHTS)
    assert page.status == 403
    text = await page.text()
    assert text.startswith("<p>Subscribers only for <b>/premium/%3Cscript%3E</b> (platform_denied)")
    assert "<script>" not in text


async def test_visitor_without_session_is_sent_to_login_with_the_return_url(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    response = await stack.get("/premium/story?page=2")
    assert response.status == 303
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "login.example", "/sso")
    return_to = parse_qs(location.query)["return_to"][0]
    assert return_to == stack.url("/premium/story?page=2")
    as_json = await stack.get("/premium/story", headers=JSON)
    assert as_json.status == 401
    body = await as_json.json()
    assert body["error"] == "unauthenticated"
    assert body["login_url"].startswith("https://login.example/sso?return_to=")
    assert as_json.headers["WWW-Authenticate"] == 'Bearer realm="paywall"'


async def test_without_login_url_unauthenticated_is_a_401_page(start_stack: StartStack) -> None:
    stack = await start_stack(server={"login_url": ""})
    response = await stack.get("/premium/story")
    assert response.status == 401
    assert "Please log in" in await response.text()


async def test_login_redirect_off_shows_the_paywall_with_a_login_link(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(server={"login_redirect": False})
    response = await stack.get("/premium/story?page=2")
    assert response.status == 401
    text = await response.text()
    assert "Please log in" in text
    assert 'href="https://login.example/sso?return_to=http%3A%2F%2F127.0.0.1%3A' in text
    assert "%2Fpremium%2Fstory%3Fpage%3D2" in text


async def test_return_url_only_for_allowed_hosts(start_stack: StartStack) -> None:
    stack = await start_stack(server={"allowed_redirect_hosts": ["news.example"]})
    allowed = await stack.get("/premium/story", headers={"Host": "news.example"})
    assert parse_qs(urlsplit(allowed.headers["Location"]).query)["return_to"] == [
        "http://news.example/premium/story"
    ]
    other = await stack.get("/premium/story", headers={"Host": "evil.example"})
    assert other.headers["Location"] == "https://login.example/sso"


async def test_forwarded_host_and_proto_only_from_trusted_proxies(
    start_stack: StartStack,
) -> None:
    forwarded = {"X-Forwarded-Host": "news.example", "X-Forwarded-Proto": "https"}
    trusting = await start_stack()
    response = await trusting.get("/premium/story", headers=forwarded)
    assert parse_qs(urlsplit(response.headers["Location"]).query)["return_to"] == [
        "https://news.example/premium/story"
    ]
    distrusting = await start_stack(server={"trusted_proxies": ["10.0.0.0/8"]})
    response = await distrusting.get("/premium/story", headers=forwarded)
    return_to = parse_qs(urlsplit(response.headers["Location"]).query)["return_to"][0]
    assert return_to.startswith("http://127.0.0.1:")


async def test_spoofed_paywall_headers_never_reach_the_content_server(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    spoof = {"X-Paywall-Customer-Id": "666", "X-Paywall-Access": "granted", "X-Paywall-X": "1"}
    await stack.get("/news", headers=spoof)
    await stack.get("/premium/story", headers={**spoof, **NO_RIGHTS})  # denied: not forwarded
    await stack.get("/premium/story", headers={**spoof, **PLAIN})
    public, granted = (request["headers"] for request in stack.content_requests)
    assert "X-Paywall-Customer-Id" not in public
    assert public["X-Paywall-Access"] == "public"
    assert "X-Paywall-X" not in public
    assert granted["X-Paywall-Customer-Id"] == "100001"
    assert "X-Paywall-X" not in granted


async def test_transfer_token_becomes_a_cookie_and_leaves_the_url(start_stack: StartStack) -> None:
    stack = await start_stack(server={"cookie_secure": True, "cookie_domain": ".example.com"})
    token = await stack.transfer_token()
    response = await stack.get(f"/premium/story?page=2&transferToken={token}&x=1")
    assert response.status == 303
    assert response.headers["Location"] == "/premium/story?page=2&x=1"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("paywall_session=demo-session-plain; ")
    attributes = {part.strip() for part in cookie.split(";")[1:]}
    assert attributes == {"Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Domain=.example.com"}
    assert stack.content_requests == []  # nothing forwarded with the token in the URL
    followed = await stack.get("/premium/story?page=2&x=1", headers=PLAIN)
    assert followed.status == 200
    # One-time: the same link again cannot log anybody in.
    again = await stack.get(f"/premium/story?transferToken={token}")
    assert again.status == 303
    assert again.headers["Location"].startswith("https://login.example/sso?return_to=")
    assert "transferToken" not in again.headers["Location"]


async def test_transfer_token_on_a_public_page_logs_in_too(start_stack: StartStack) -> None:
    stack = await start_stack()
    token = await stack.transfer_token()
    response = await stack.get(f"/?transferToken={token}")
    assert response.status == 303
    assert response.headers["Location"] == "/"
    assert "paywall_session=demo-session-plain" in response.headers["Set-Cookie"]


async def test_stale_transfer_token_with_a_good_cookie_just_cleans_the_url(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    response = await stack.get("/premium/story?transferToken=used-up", headers=PLAIN)
    assert response.status == 303
    assert response.headers["Location"] == "/premium/story"
    assert "Set-Cookie" not in response.headers


async def test_invalid_transfer_token_is_unauthenticated_not_an_error(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    response = await stack.get("/premium/story?transferToken=nonsense", headers=JSON)
    assert response.status == 401
    assert (await response.json())["reason"] == "invalid_credential"


async def test_transfer_token_is_never_forwarded_even_on_post(start_stack: StartStack) -> None:
    stack = await start_stack()
    response = await stack.http.post(
        stack.url("/upload/x?transferToken=abc&keep=1"), data=b"payload", headers=PLAIN
    )
    assert response.status == 200  # a POST is not redirected (its body would be lost)
    assert stack.content_requests[-1]["path_qs"] == "/upload/x?keep=1"
    assert stack.content_requests[-1]["body"] == len(b"payload")


async def test_concurrent_requests_with_one_transfer_token_share_one_exchange(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    token = await stack.transfer_token()
    responses = await asyncio.gather(
        *(stack.get(f"/premium/story?transferToken={token}") for _ in range(10))
    )
    assert {r.status for r in responses} == {303}
    assert all("paywall_session=" in r.headers.get("Set-Cookie", "") for r in responses)
    assert stack.platform_calls("transfer_token") == 1


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/premium%2fstory", {}, id="encoded-slash"),
        pytest.param("/free/..;/premium/story", {}, id="dot-dot-semicolon"),
        pytest.param("/%ff", {}, id="invalid-utf8"),
        pytest.param("/premium/x", {"Cookie": "paywall_session=a; paywall_session=b"}, id="two"),
        pytest.param("/premium/x", {"Cookie": 'paywall_session="a,b"'}, id="comma-cookie"),
        pytest.param("/premium/x", {"X-plenigo-customer-session": "a b"}, id="space-in-header"),
        pytest.param("/premium/x", {"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param("/premium/x?transferToken=a&transfertoken=b", {}, id="two-transfer-tokens"),
        pytest.param("/premium/x", {"X-Long": "x" * 9000}, id="oversized-header"),
    ],
)
async def test_malformed_requests_are_400_never_500(
    start_stack: StartStack, path: str, headers: dict[str, str]
) -> None:
    stack = await start_stack()
    response = await stack.get(path, headers=headers)
    assert response.status == 400
    assert stack.content_requests == []


async def test_raw_request_with_control_characters_in_the_cookie_is_400(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    port = stack.gateway.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /premium/x HTTP/1.1\r\nHost: a\r\nCookie: paywall_session=\x7fx\r\n"
        b"Connection: close\r\n\r\n"
    )
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.split()[1] == b"400"


async def test_paths_are_decided_and_forwarded_in_one_normal_form(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    sneaky = await stack.get("/news/%2e%2e/premium//story", headers=NO_RIGHTS)
    assert sneaky.status == 403  # decided as /premium/story
    fine = await stack.get("/news/%2e%2e/premium//story", headers=PLAIN)
    assert fine.status == 200
    assert stack.content_requests[-1]["path_qs"] == "/premium/story"


async def test_platform_down_without_cached_answer_is_503(start_stack: StartStack) -> None:
    stack = await start_stack()
    stack.platform_down()
    page = await stack.get("/premium/story", headers=PLAIN)
    assert page.status == 503
    assert page.headers["Retry-After"] == "5"
    as_json = await stack.get("/premium/story", headers={**PLAIN, **JSON})
    assert (await as_json.json())["error"] == "unavailable"
    assert stack.content_requests == []


async def test_platform_down_with_cached_answer_serves_it(start_stack: StartStack) -> None:
    stack = await start_stack()
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    stack.platform_down()
    stack.clock.advance(200)  # past the access answer's validity (60 s), within stale_if_error
    response = await stack.get("/premium/story", headers=PLAIN)
    assert response.status == 200
    assert stack.content_requests[-1]["headers"]["X-Paywall-Cache"] == "stale"


async def test_fail_open_is_flagged(start_stack: StartStack) -> None:
    stack = await start_stack(access={"on_api_error": "allow"})
    assert (await stack.get("/archive/x", headers=PLAIN)).status == 200  # session cached
    stack.platform_down()
    response = await stack.get("/premium/story", headers=PLAIN)
    assert response.status == 200
    assert stack.content_requests[-1]["headers"]["X-Paywall-Access"] == "fail-open"


async def test_unknown_internal_path_is_404(start_stack: StartStack) -> None:
    stack = await start_stack()
    assert (await stack.get("/_paywall/auth", headers=PLAIN)).status == 404
    assert stack.content_requests == []


async def test_no_tokens_in_the_access_log(
    start_stack: StartStack, caplog: pytest.LogCaptureFixture, access_capture: AccessCapture
) -> None:
    stack = await start_stack()
    token = await stack.transfer_token()
    with caplog.at_level("DEBUG"):
        await stack.get(f"/premium/story?transferToken={token}")
        await stack.get("/premium/story", headers=PLAIN)
    decisions = [r for r in caplog.records if r.name == "gateway.decision"]
    assert len(decisions) >= 2
    # What the gateway hands to either log, before any redaction, and what is written.
    texts = [repr(r.__dict__.get("fields")) + r.getMessage() for r in decisions]
    texts += [repr(values) for values in access_capture.log.raw]
    lines = access_capture.lines()
    texts.append(repr(lines))
    for text in texts:
        assert token not in text
        assert "demo-session-plain" not in text
    assert len(access_capture.log.raw) == 2
    assert [line["status"] for line in lines] == [303, 200]
    assert lines[1]["customer_id"] == "100001"
