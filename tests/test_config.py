"""Configuration loading: file, environment overrides, and errors that name the key."""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import (
    AccessSettings,
    CacheSettings,
    LoggingSettings,
    PlatformSettings,
    ServerSettings,
    Settings,
    load_settings,
)
from gateway.core.policy import AccessRule
from gateway.core.routes import RouteKind
from gateway.errors import ConfigError
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "config" / "gateway.example.toml"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PAYWALL_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings(None)
    assert str(settings.platform.base_url) == "https://api.plenigo.com/api/v3.0"
    assert settings.access.time_zone == "Europe/Berlin"
    assert settings.access.default_policy == "deny"
    assert settings.routes == ()


def test_example_file_states_exactly_the_defaults() -> None:
    assert load_settings(EXAMPLE) == Settings()


@pytest.mark.parametrize(
    ("section", "model"),
    [
        pytest.param("platform", PlatformSettings, id="platform"),
        pytest.param("access", AccessSettings, id="access"),
        pytest.param("cache", CacheSettings, id="cache"),
        pytest.param("server", ServerSettings, id="server"),
        pytest.param("logging", LoggingSettings, id="logging"),
    ],
)
def test_example_file_documents_every_key(section: str, model: type[object]) -> None:
    documented = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))[section]
    assert set(documented) == set(model.model_fields)  # type: ignore[attr-defined]


def test_example_routes_comment_is_valid_configuration(tmp_path: Path) -> None:
    # The commented-out [[routes]] block in the example must work when uncommented.
    text = EXAMPLE.read_text(encoding="utf-8")
    block = text[text.index("# [[routes]]") :]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    settings = load_settings(write(tmp_path, uncommented))
    assert [r.path for r in settings.routes] == ["/premium/**", "/**"]
    assert settings.routes[0].access_rights == ("premium",)
    assert settings.routes[1].public is True


def test_file_values_are_used(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            """
[platform]
base_url = "http://127.0.0.1:8090/api/v3.0"
api_token = "from-file"
[access]
time_zone = "America/New_York"
max_ttl = 120
[[routes]]
path = "/premium/**"
access_rights = ["premium", "archive"]
require = "all"
methods = ["get", "*"]
""",
        )
    )
    assert str(settings.platform.base_url) == "http://127.0.0.1:8090/api/v3.0"
    assert settings.platform.api_token.get_secret_value() == "from-file"
    assert settings.access.max_ttl == 120
    assert settings.routes[0].require == "all"
    assert settings.routes[0].methods == ("GET", "*")
    policy = settings.access.validity_policy()
    assert policy.max_ttl == timedelta(seconds=120)
    assert str(policy.time_zone) == "America/New_York"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWALL_PLATFORM__API_TOKEN", "from-env")
    monkeypatch.setenv("PAYWALL_ACCESS__MAX_TTL", "600")
    monkeypatch.setenv("PAYWALL_ROUTES", '[{"path": "/x/**", "public": true}]')
    settings = load_settings(
        write(
            tmp_path,
            """
[platform]
api_token = "from-file"
[access]
max_ttl = 120
negative_ttl = 5
""",
        )
    )
    assert settings.platform.api_token.get_secret_value() == "from-env"
    assert settings.access.max_ttl == 600
    assert settings.access.negative_ttl == 5  # untouched keys of the same section survive
    assert settings.routes[0].path == "/x/**"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[platform]\nbase_urll = 'x'\n",
            r"platform\.base_urll: unknown key",
            id="unknown-nested-key",
        ),
        pytest.param("[plattform]\n", r"plattform: unknown key", id="unknown-section"),
        pytest.param(
            "[access]\nmax_ttl = 'soon'\n", r"access\.max_ttl: .*integer", id="wrong-type"
        ),
        pytest.param(
            "[access]\nmax_ttl = -1\n", r"access\.max_ttl: .*greater than 0", id="out-of-range"
        ),
        pytest.param(
            "[access]\ntime_zone = 'Europe/Gotham'\n",
            r"access\.time_zone: unknown time zone 'Europe/Gotham'",
            id="bad-zone",
        ),
        pytest.param(
            "[access]\ntime_zone = '../etc/passwd'\n",
            r"access\.time_zone: unknown time zone",
            id="zone-path-traversal",
        ),
        pytest.param(
            "[platform]\nbase_url = 'not a url'\n", r"platform\.base_url: .*URL", id="bad-url"
        ),
        pytest.param(
            "[platform]\nbase_url = 'ftp://x'\n", r"platform\.base_url: .*scheme", id="non-http-url"
        ),
        pytest.param(
            "[access]\nmax_ttl = 30\n",
            r"access: default_ttl \(60\) exceeds max_ttl",
            id="ttl-above-cap",
        ),
        pytest.param(
            "[server]\nmode = 'sidecar'\n", r"server\.mode: .*'proxy' or 'auth_request'", id="mode"
        ),
        pytest.param(
            "[server]\ntrusted_proxies = ['10.0.0.0/8', 'proxy.local']\n",
            r"server\.trusted_proxies: 'proxy\.local' is not an IP address",
            id="trusted-proxy-name",
        ),
        pytest.param(
            "[server]\nlogin_url = '/login'\n",
            r"server\.login_url: '/login' is not an absolute http\(s\) URL",
            id="relative-login-url",
        ),
        pytest.param(
            "[server]\nallowed_redirect_hosts = ['https://evil.example']\n",
            r"server\.allowed_redirect_hosts: .*is not a host name",
            id="redirect-host-with-scheme",
        ),
        pytest.param(
            "[server]\nsession_cookie = 'a b'\n", r"server\.session_cookie: ", id="cookie-name"
        ),
        pytest.param(
            "[server]\nauth_unavailable_status = 500\n",
            r"server\.auth_unavailable_status: ",
            id="auth-unavailable-status",
        ),
        pytest.param("[logging]\nlevel = 'loud'\n", r"logging\.level: ", id="log-level"),
        pytest.param(
            "[cache]\nredis_url = 'http://cache:6379'\n",
            r"cache\.redis_url: 'http://cache:6379' is not a redis://",
            id="redis-scheme",
        ),
        pytest.param(
            "[[routes]]\npath = 'premium/**'\naccess_rights = ['p']\n",
            r"routes\.0\.path: .*must start with '/'",
            id="relative-route",
        ),
        pytest.param(
            "[[routes]]\npath = '/p/**'\n",
            r"routes\.0: .*needs access_rights",
            id="route-without-rights",
        ),
        pytest.param(
            "[[routes]]\npath = '/p/**'\npublic = true\naccess_rights = ['p']\n",
            r"routes\.0: .*public and also lists",
            id="route-public-and-rights",
        ),
        pytest.param(
            "[[routes]]\npath = '/p'\npublic = true\nmethods = ['FETCH']\n",
            r"routes\.0\.methods: unknown HTTP method\(s\) FETCH",
            id="bad-method",
        ),
        pytest.param(
            "[[routes]]\npath = '/a**b'\npublic = true\n", r"routes\.0\.path: .*\*\*", id="bad-glob"
        ),
        pytest.param(
            "[[routes]]\npath = '/a/%2F/b'\npublic = true\n",
            r"routes\.0\.path: .*encoded slash",
            id="ambiguous-pattern",
        ),
        pytest.param(
            "[access]\non_api_error = 'maybe'\n",
            r"access\.on_api_error: .*'deny' or 'allow'",
            id="bad-on-api-error",
        ),
        pytest.param(
            "[cache]\nmax_entries = 10\n",
            r"cache\.max_entries: .*greater than or equal to 100",
            id="tiny-cache",
        ),
        pytest.param("[access\n", r"not valid TOML", id="unparsable"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert re.search(expected, str(info.value)), str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWALL_ACCESS__NEGATIVE_TTL", "often")
    with pytest.raises(ConfigError, match=r"access\.negative_ttl"):
        load_settings(None)


def test_routes_become_a_route_table(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            """
[access]
case_sensitive_paths = false
[[routes]]
path = "/premium/**"
access_rights = ["premium", "archive", "premium"]
require = "all"
[[routes]]
path = "/api/**"
methods = ["*"]
access_rights = ["api"]
[[routes]]
path = "/**"
public = true
""",
        )
    )
    table = settings.route_table()
    premium = table.match("GET", "/Premium/story")
    assert premium.kind is RouteKind.PROTECTED
    assert premium.rule == AccessRule(("premium", "archive"), "all")
    assert table.match("POST", "/api/x").rule == AccessRule(("api",), "any")
    assert table.match("GET", "/free").kind is RouteKind.PUBLIC
    # POST is not among the premium route's default methods (GET, HEAD) and no other
    # route covers it: the default policy (deny) applies.
    assert table.match("POST", "/premium/story").kind is RouteKind.DENY
