"""auth_request mode: /_paywall/auth, /_paywall/deny and /_paywall/transfer, called directly
the way nginx / Traefik / Caddy call them (the real nginx drives them in tests/deploy)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.web.conftest import Stack, StartStack

PLAIN = "paywall_session=demo-session-plain"
NO_RIGHTS = "paywall_session=demo-session-no-rights"


async def auth_stack(start_stack: StartStack, **server: Any) -> Stack:
    return await start_stack(server={"mode": "auth_request", **server})


def original(uri: str, cookie: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"X-Original-URI": uri, "X-Original-Method": "GET", "Host": "news.example"}
    if cookie is not None:
        headers["Cookie"] = cookie
    headers.update(extra)
    return headers


async def test_grant_carries_the_decision_and_its_reuse_time(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack)
    response = await stack.get("/_paywall/auth", headers=original("/premium/a", PLAIN))
    assert response.status == 200
    assert response.headers["X-Paywall-Customer-Id"] == "100001"
    assert response.headers["X-Paywall-Access"] == "granted"
    assert response.headers["X-Paywall-Cache"] == "miss"
    assert response.headers["X-Accel-Expires"] == "10"  # capped by auth_cache_max_seconds
    again = await stack.get("/_paywall/auth", headers=original("/premium/a", PLAIN))
    assert again.headers["X-Paywall-Cache"] == "hit"
    assert stack.metrics.value(
        "paywall_requests_total", {"mode": "auth_request", "outcome": "granted"}
    )


async def test_reuse_time_is_the_decisions_remaining_validity(start_stack: StartStack) -> None:
    # demo-session-short-cache: the platform's maxCacheDate is two minutes ahead.
    stack = await auth_stack(start_stack, auth_cache_max_seconds=3600)
    cookie = "paywall_session=demo-session-short-cache"
    first = await stack.get("/_paywall/auth", headers=original("/premium/a", cookie))
    assert first.status == 200
    assert first.headers["X-Accel-Expires"] == "120"
    stack.clock.advance(45.5)
    later = await stack.get("/_paywall/auth", headers=original("/premium/a", cookie))
    assert later.headers["X-Paywall-Cache"] == "hit"
    assert later.headers["X-Accel-Expires"] == "74"
    public = await stack.get("/_paywall/auth", headers=original("/news"))
    assert (public.status, public.headers["X-Accel-Expires"]) == (200, "3600")


async def test_zero_cap_means_never_reuse(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack, auth_cache_max_seconds=0)
    response = await stack.get("/_paywall/auth", headers=original("/premium/a", PLAIN))
    assert response.headers["X-Accel-Expires"] == "0"


@pytest.mark.parametrize(
    ("uri", "cookie", "status", "access", "reason"),
    [
        pytest.param("/premium/a", None, 401, "unauthenticated", "no_credential", id="anonymous"),
        pytest.param("/premium/a", NO_RIGHTS, 403, "denied", "platform_denied", id="denied"),
        pytest.param(
            "/premium/a",
            "paywall_session=bogus",
            401,
            "unauthenticated",
            "invalid_credential",
            id="invalid",
        ),
        pytest.param("/premium/%2Fa", PLAIN, 403, "bad_request", "bad_request", id="ambiguous"),
    ],
)
async def test_refusals_are_401_or_403_and_never_reused(
    start_stack: StartStack,
    uri: str,
    cookie: str | None,
    status: int,
    access: str,
    reason: str,
) -> None:
    stack = await auth_stack(start_stack)
    response = await stack.get("/_paywall/auth", headers=original(uri, cookie))
    assert response.status == status
    assert response.headers["X-Paywall-Access"] == access
    assert response.headers["X-Paywall-Reason"] == reason
    assert response.headers["X-Accel-Expires"] == "0"
    assert "WWW-Authenticate" not in response.headers  # nginx would copy it to the visitor


async def test_platform_down_is_403_unavailable_or_503_when_configured(
    start_stack: StartStack,
) -> None:
    default = await auth_stack(start_stack)
    default.platform_down()
    response = await default.get("/_paywall/auth", headers=original("/premium/a", PLAIN))
    assert (response.status, response.headers["X-Paywall-Access"]) == (403, "unavailable")
    configured = await auth_stack(start_stack, auth_unavailable_status=503)
    configured.platform_down()
    response = await configured.get("/_paywall/auth", headers=original("/premium/a", PLAIN))
    assert (response.status, response.headers["X-Paywall-Access"]) == (503, "unavailable")


async def test_traefik_and_caddy_headers_work_too(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack)
    headers = {
        "X-Forwarded-Uri": "/premium/a?x=1",
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Host": "news.example",
        "X-Forwarded-Proto": "https",
        "Cookie": NO_RIGHTS,
    }
    denied = await stack.get("/_paywall/auth", headers=headers)
    assert denied.status == 403
    headers["Cookie"] = PLAIN
    granted = await stack.get("/_paywall/auth", headers=headers)
    assert granted.status == 200
    # The forwarded method counts: POST is not covered by the GET/HEAD premium route, and an
    # unmatched route is denied by default.
    headers["X-Forwarded-Method"] = "POST"
    post = await stack.get("/_paywall/auth", headers=headers)
    assert (post.status, post.headers["X-Paywall-Reason"]) == (403, "route_denied")


async def test_original_request_headers_only_from_trusted_proxies(
    start_stack: StartStack,
) -> None:
    stack = await auth_stack(start_stack, trusted_proxies=["10.0.0.0/8"])
    response = await stack.get("/_paywall/auth", headers=original("/news", PLAIN))
    assert response.status == 403
    assert response.headers["X-Paywall-Reason"] == "untrusted_proxy"
    assert stack.platform_calls("validate_session") == 0
    deny = await stack.get("/_paywall/deny", headers=original("/premium/a"))
    assert deny.status == 403


async def test_missing_original_uri_is_refused(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack)
    response = await stack.get("/_paywall/auth", headers={"Cookie": PLAIN})
    assert (response.status, response.headers["X-Paywall-Reason"]) == (403, "no_original_uri")


async def test_auth_endpoint_leaves_transfer_tokens_alone(start_stack: StartStack) -> None:
    # It cannot set a cookie, so exchanging the one-time token there would waste it.
    stack = await auth_stack(start_stack)
    token = await stack.transfer_token()
    for spelling in ("transferToken", "transfertoken", "transfer%54oken"):
        response = await stack.get(
            "/_paywall/auth", headers=original(f"/news?{spelling}={token}", PLAIN)
        )
        assert response.status == 401  # even with a good session: the deny page must run
        assert response.headers["X-Paywall-Reason"] == "transfer_token"
        assert "WWW-Authenticate" not in response.headers
    assert stack.platform_calls("transfer_token") == 0
    # /_paywall/deny (nginx's error_page) does the exchange: 303 to the clean URL + cookie.
    deny = await stack.get(
        "/_paywall/deny", headers=original(f"/premium/a?transferToken={token}&p=2")
    )
    assert deny.status == 303
    assert deny.headers["Location"] == "/premium/a?p=2"
    assert deny.headers["Set-Cookie"].startswith("paywall_session=demo-session-plain;")


async def test_deny_page_answers_like_proxy_mode(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack)
    login = await stack.get("/_paywall/deny", headers=original("/premium/a?p=1"))
    assert login.status == 303
    query = parse_qs(urlsplit(login.headers["Location"]).query)
    assert query["return_to"] == ["http://news.example/premium/a?p=1"]
    proto = await stack.get(
        "/_paywall/deny", headers=original("/premium/a", **{"X-Forwarded-Proto": "https"})
    )
    assert parse_qs(urlsplit(proto.headers["Location"]).query)["return_to"] == [
        "https://news.example/premium/a"
    ]
    paywall = await stack.get("/_paywall/deny", headers=original("/premium/a", NO_RIGHTS))
    assert paywall.status == 403
    assert "Subscribers only" in await paywall.text()
    bad = await stack.get("/_paywall/deny", headers=original("/premium/%2fa", PLAIN))
    assert bad.status == 400
    granted_by_now = await stack.get("/_paywall/deny", headers=original("/premium/a", PLAIN))
    assert (granted_by_now.status, granted_by_now.headers["Location"]) == (303, "/premium/a")
    stack.platform_down()
    down = await stack.get(
        "/_paywall/deny", headers=original("/premium/a", "paywall_session=demo-session-windows")
    )
    assert down.status == 503


async def test_transfer_endpoint_sets_the_cookie_and_returns(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack)
    token = await stack.transfer_token()
    response = await stack.get(
        f"/_paywall/transfer?transferToken={token}&return_to=%2Fpremium%2Fa%3Fp%3D1",
        headers={"Host": "news.example"},
    )
    assert response.status == 303
    assert response.headers["Location"] == "/premium/a?p=1"
    assert response.headers["Set-Cookie"].startswith("paywall_session=demo-session-plain;")


async def test_transfer_endpoint_returns_to_the_original_uri_from_nginx(
    start_stack: StartStack,
) -> None:
    stack = await auth_stack(start_stack)
    token = await stack.transfer_token()
    response = await stack.get(
        f"/_paywall/transfer?transferToken={token}",
        headers=original(f"/premium/a?transferToken={token}&p=1"),
    )
    assert (response.status, response.headers["Location"]) == (303, "/premium/a?p=1")


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "https://news.example@evil.example/",
        "http://evil.example%2F@news.example/",
        "%2F%2Fevil.example",
    ],
)
async def test_transfer_endpoint_refuses_open_redirects(
    start_stack: StartStack, return_to: str
) -> None:
    from urllib.parse import quote

    stack = await auth_stack(start_stack)
    token = await stack.transfer_token()
    response = await stack.get(
        f"/_paywall/transfer?transferToken={token}&return_to={quote(return_to, safe='')}",
        headers={"Host": "news.example"},
    )
    assert response.status == 400
    assert "Location" not in response.headers
    assert stack.platform_calls("transfer_token") == 0  # refused before the token was spent


async def test_transfer_endpoint_allows_configured_hosts(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack, allowed_redirect_hosts=["www.example.com"])
    token = await stack.transfer_token()
    response = await stack.get(
        f"/_paywall/transfer?transferToken={token}&return_to=https://www.example.com/premium/a",
        headers={"Host": "news.example"},
    )
    assert (response.status, response.headers["Location"]) == (
        303,
        "https://www.example.com/premium/a",
    )


async def test_transfer_endpoint_with_a_spent_token_sends_to_login(
    start_stack: StartStack,
) -> None:
    stack = await auth_stack(start_stack)
    response = await stack.get(
        "/_paywall/transfer?transferToken=spent&return_to=/premium/a",
        headers={"Host": "news.example"},
    )
    assert response.status == 303
    assert parse_qs(urlsplit(response.headers["Location"]).query)["return_to"] == [
        "http://news.example/premium/a"
    ]
    missing = await stack.get("/_paywall/transfer?return_to=/premium/a")
    assert missing.status == 400


async def test_only_paywall_paths_are_served(start_stack: StartStack) -> None:
    stack = await auth_stack(start_stack)
    assert (await stack.get("/premium/a")).status == 404
    assert (await stack.get("/_paywall/nothing")).status == 404
