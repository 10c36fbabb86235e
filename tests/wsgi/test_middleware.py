"""gateway.wsgi.PaywallMiddleware in-process, what the app gets and what the visitor gets: a
tiny WSGI app, environs as a server builds them, the platform simulator on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.http.steps import Decision
from gateway.wsgi import DECISION_KEY, MIDDLEWARE_KEY, PaywallMiddleware
from tests.wsgi.conftest import (
    APP_CACHE_CONTROL,
    LOGIN_URL,
    NO_RIGHTS,
    NO_RIGHTS_COOKIE,
    PLAIN,
    PLAIN_COOKIE,
    EchoApp,
    Make,
    ThreadedSimulator,
    call,
    config_toml,
    make_settings,
    settings_sections,
)

# --- what the app gets ------------------------------------------------------------------------


def test_public_page_passes_with_the_decision(make: Make) -> None:
    middleware, app = make()
    result = call(middleware, "/articles/one?x=1")
    assert result.status == 200
    assert result.header("Cache-Control") == APP_CACHE_CONTROL  # public pages keep theirs
    assert app.last["HTTP_X_PAYWALL_ACCESS"] == "public"
    assert app.last[DECISION_KEY] == Decision(None, "public", "none", "public_route")
    assert app.last[MIDDLEWARE_KEY] is middleware


def test_granted_page_carries_the_customer_and_is_private(make: Make) -> None:
    middleware, app = make()
    result = call(middleware, "/premium/story", headers=PLAIN_COOKIE)
    assert result.status == 200
    seen = app.last
    assert seen["HTTP_X_PAYWALL_CUSTOMER_ID"] == "100001"
    assert seen["HTTP_X_PAYWALL_ACCESS"] == "granted"
    assert seen[DECISION_KEY].customer_id == "100001"
    assert seen[DECISION_KEY].access == "granted"
    # The session cookie stays at the gateway; the visitor's other cookies go on.
    assert seen["HTTP_COOKIE"] == "theme=dark; lang=de"
    cache_control = result.header("Cache-Control") or ""
    assert cache_control.startswith("private")
    assert "public" not in cache_control
    assert "s-maxage" not in cache_control
    assert "max-age=60" in cache_control


@pytest.mark.parametrize(
    ("target", "headers", "status", "check"),
    [
        pytest.param("/premium/a", NO_RIGHTS_COOKIE, 403, "text/html", id="denied-html"),
        pytest.param(
            "/premium/a",
            {**NO_RIGHTS_COOKIE, "Accept": "application/json"},
            403,
            "access_denied",
            id="denied-json",
        ),
        pytest.param("/premium/a", {}, 303, LOGIN_URL, id="unauthenticated-login-redirect"),
        pytest.param(
            "/premium/a", {"Accept": "application/json"}, 401, "unauthenticated", id="json-401"
        ),
        pytest.param(
            "/premium/a",
            {"Cookie": "paywall_session=a; PAYWALL_SESSION=b"},
            400,
            "Bad request",
            id="malformed-cookie",
        ),
        pytest.param("/premium%2Fa", PLAIN_COOKIE, 400, "Bad request", id="encoded-slash"),
        pytest.param("/_paywall/nothing", {}, 404, "Not found", id="unknown-internal"),
    ],
)
def test_refusals_are_the_gateway_s_own_answers(
    make: Make, target: str, headers: dict[str, str], status: int, check: str
) -> None:
    middleware, app = make()
    result = call(middleware, target, headers=headers)
    assert result.status == status
    assert check in (result.body.decode() + " ".join(v for _, v in result.headers))
    assert app.seen == []
    assert result.header("Content-Length") == str(len(result.body))


def test_deny_route_for_an_unlisted_method(make: Make) -> None:
    middleware, app = make()
    result = call(middleware, "/articles/a", method="DELETE", headers=PLAIN_COOKIE)
    assert result.status == 403
    assert app.seen == []


def test_head_refusal_has_no_body(make: Make) -> None:
    middleware, _ = make()
    result = call(middleware, "/premium/a", method="HEAD", headers=NO_RIGHTS_COOKIE)
    assert result.status == 403
    assert result.body == b""
    assert int(result.header("Content-Length") or 0) > 0


def test_environ_is_rewritten_to_the_normalised_request(make: Make) -> None:
    middleware, app = make()
    result = call(middleware, "/premium//a/./%7Eb/../caf%C3%A9?x=1&y=%20", headers=PLAIN_COOKIE)
    assert result.status == 200
    seen = app.last
    assert seen["PATH_INFO"] == "/premium/a/caf\xc3\xa9"  # WSGI: the bytes as latin-1
    assert seen["RAW_URI"] == "/premium/a/caf%C3%A9?x=1&y=%20"
    assert seen["QUERY_STRING"] == "x=1&y=%20"


def test_transfer_token_never_reaches_the_app_even_on_post(make: Make) -> None:
    middleware, app = make()
    result = call(
        middleware,
        "/form?transferToken=abc&keep=1",
        method="POST",
        extra={"REQUEST_URI": "/form?transferToken=abc&keep=1"},
    )
    assert result.status == 200  # a POST is not redirected: its body would be lost
    seen = app.last
    assert seen["QUERY_STRING"] == "keep=1"
    assert seen["RAW_URI"] == seen["REQUEST_URI"] == "/form?keep=1"
    assert "abc" not in json.dumps({k: v for k, v in seen.items() if isinstance(v, str)})


def test_target_rebuilt_from_path_info_without_raw_uri(make: Make) -> None:
    middleware, app = make()
    result = call(
        middleware,
        "/mount/premium/a%20b?q=1",
        raw_uri=False,
        headers=PLAIN_COOKIE,
        extra={"SCRIPT_NAME": "/mount", "PATH_INFO": "/premium/a b"},
    )
    assert result.status == 200  # decided as /mount/premium/a%20b: not /premium/**
    assert app.last["HTTP_X_PAYWALL_ACCESS"] == "public"
    assert app.last["SCRIPT_NAME"] == "/mount"
    assert app.last["PATH_INFO"] == "/premium/a b"


def test_mounted_app_path_outside_the_mount_is_refused(make: Make) -> None:
    middleware, app = make()
    result = call(middleware, "/mount/../articles/a", extra={"SCRIPT_NAME": "/mount"})
    assert result.status == 400  # decided as /articles/a: not this app's to serve
    assert app.seen == []


def test_client_paywall_headers_never_reach_the_app(make: Make) -> None:
    middleware, app = make()
    spoofed = {
        "X-Paywall-Access": "granted",  # WSGI spells X_Paywall_Access the same: HTTP_X_PAYWALL_…
        "X-Paywall-Customer-Id": "999",
        "X-Paywall-Anything": "1",
        "X-Original-URL": "/premium/a",
        "X-plenigo-customer-session": NO_RIGHTS,
    }
    result = call(middleware, "/articles/a", headers=spoofed)
    assert result.status == 200
    seen = app.last
    assert seen["HTTP_X_PAYWALL_ACCESS"] == "public"
    assert "HTTP_X_PAYWALL_CUSTOMER_ID" not in seen
    assert "HTTP_X_PAYWALL_ANYTHING" not in seen
    assert "HTTP_X_ORIGINAL_URL" not in seen
    assert "HTTP_X_PLENIGO_CUSTOMER_SESSION" not in seen  # a credential: not forwarded


def test_session_token_forwarded_only_when_configured(make: Make) -> None:
    middleware, app = make(server={"forward_session_token": True})
    assert call(middleware, "/premium/a", headers=PLAIN_COOKIE).status == 200
    assert PLAIN in app.last["HTTP_COOKIE"]


def test_login_hand_off(make: Make, simulator: ThreadedSimulator) -> None:
    middleware, app = make()
    token = simulator.transfer_token()
    result = call(middleware, f"/_paywall/transfer?transferToken={token}&return_to=/premium/a")
    assert result.status == 303
    assert result.header("Location") == "/premium/a"
    assert (result.header("Set-Cookie") or "").startswith("paywall_session=")
    again = call(middleware, f"/premium/a?transferToken={token}&x=1")  # spent now
    assert again.status == 303
    assert token not in (again.header("Location") or "")
    assert app.seen == []


def test_platform_down_with_nothing_cached_is_503(make: Make, simulator: ThreadedSimulator) -> None:
    middleware, _ = make()
    simulator.platform_down()
    try:
        result = call(middleware, "/premium/a", headers={"Cookie": "paywall_session=demo-x"})
    finally:
        simulator.platform_down(False)
    assert result.status == 503
    assert result.header("Retry-After") == "5"


def test_settings_or_path(simulator: ThreadedSimulator, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(config_toml(settings_sections(simulator)))
    from_path = PaywallMiddleware(EchoApp(), config=str(config))
    assert isinstance(from_path.settings, Settings)
    assert from_path.settings.platform.base_url == make_settings(simulator).platform.base_url
