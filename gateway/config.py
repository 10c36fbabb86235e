"""Configuration: pydantic models loaded from a TOML file, overridden by ``PAYWALL_*`` variables.

``PAYWALL_PLATFORM__API_TOKEN=...`` overrides ``[platform] api_token``: the prefix, then the
section and key joined by ``__``. Complex values (lists) are given as JSON in the variable.
Every problem is reported as :class:`~gateway.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.core.routes import Route, RouteKind, RouteTable, compile_pattern
from gateway.errors import ConfigError
from gateway.store.redis_connect import parse_redis_url

ENV_PREFIX = "PAYWALL_"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})


def _ip_networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """``value`` if every element is an IP address or network; ValueError naming the first
    that is not."""
    for network in value:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(
                f"{network!r} is not an IP address or network (e.g. '10.0.0.0/8')"
            ) from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlatformSettings(_Section):
    """Where the platform API is and how patiently we talk to it."""

    base_url: HttpUrl = HttpUrl("https://api.plenigo.com/api/v3.0")
    api_token: SecretStr = SecretStr("")
    connect_timeout: float = Field(default=1.0, gt=0, le=60)
    request_timeout: float = Field(default=2.0, gt=0, le=120)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff: float = Field(default=0.05, ge=0, le=10)
    retry_backoff_max: float = Field(default=1.0, ge=0, le=60)
    max_retry_after: float = Field(default=2.0, ge=0, le=60)
    breaker_failures: int = Field(default=5, ge=0, le=1_000)
    breaker_open_seconds: float = Field(default=10.0, gt=0, le=3_600)


class AccessSettings(_Section):
    """Decision knobs: time zone of daily windows, cache lifetimes, the unmatched-route policy."""

    time_zone: str = "Europe/Berlin"
    max_ttl: int = Field(default=300, gt=0, le=86_400)
    default_ttl: int = Field(default=60, gt=0, le=86_400)
    negative_ttl: int = Field(default=10, gt=0, le=3_600)
    default_policy: Literal["deny", "public"] = "deny"
    case_sensitive_paths: bool = True
    on_api_error: Literal["deny", "allow"] = "deny"

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (expected an IANA name such as 'Europe/Berlin')"
            ) from None
        return value

    @model_validator(mode="after")
    def _ttls_within_cap(self) -> AccessSettings:
        for name in ("default_ttl", "negative_ttl"):
            if getattr(self, name) > self.max_ttl:
                raise ValueError(f"{name} ({getattr(self, name)}) exceeds max_ttl ({self.max_ttl})")
        return self

    def validity_policy(self) -> ValidityPolicy:
        return ValidityPolicy(
            time_zone=ZoneInfo(self.time_zone),
            max_ttl=timedelta(seconds=self.max_ttl),
            default_ttl=timedelta(seconds=self.default_ttl),
            negative_ttl=timedelta(seconds=self.negative_ttl),
        )


class CacheSettings(_Section):
    """In-process cache size and the lifetimes of identity answers and stale access answers."""

    max_entries: int = Field(default=100_000, ge=100, le=10_000_000)
    session_ttl: int = Field(default=300, gt=0, le=86_400)
    invalid_session_ttl: int = Field(default=30, gt=0, le=3_600)
    stale_if_error: int = Field(default=300, ge=0, le=86_400)
    redis_url: str = ""
    redis_timeout: float = Field(default=0.1, gt=0, le=5)
    redis_breaker_failures: int = Field(default=5, ge=0, le=1_000)
    redis_breaker_open_seconds: float = Field(default=5.0, gt=0, le=3_600)
    refresh_ahead: float = Field(default=10.0, ge=0, le=3_600)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        """One server (redis://, rediss://, unix://), Sentinel (redis+sentinel://) or Cluster
        (redis+cluster://): checked as the client will read it, messages without secrets."""
        if value:
            parse_redis_url(value)
        return value


class ServerSettings(_Section):
    """The HTTP front-end: mode, listeners, upstream, cookies, redirects and deny pages."""

    mode: Literal["proxy", "auth_request"] = "proxy"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8081, ge=0, le=65_535)
    upstream: HttpUrl = HttpUrl("http://127.0.0.1:8000")
    upstream_connect_timeout: float = Field(default=2.0, gt=0, le=60)
    upstream_read_timeout: float = Field(default=30.0, gt=0, le=3_600)
    max_request_body: int = Field(default=0, ge=0)
    trusted_proxies: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    forward_session_token: bool = False
    allow_path_parameters: bool = False
    session_cookie: str = Field(default="paywall_session", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    cookie_secure: bool = True
    cookie_domain: str = ""
    cookie_max_age: int = Field(default=0, ge=0, le=400 * 86_400)
    transfer_token_param: str = Field(default="transferToken", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    login_url: str = ""
    login_redirect: bool = True
    login_return_param: str = Field(default="return_to", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    allowed_redirect_hosts: tuple[str, ...] = ()
    paywall_template: str = ""
    auth_cache_max_seconds: int = Field(default=10, ge=0, le=3_600)
    auth_unavailable_status: Literal[403, 503] = 403
    shutdown_grace: float = Field(default=10.0, ge=0, le=600)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _ip_networks(value)

    @field_validator("login_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/?#\s]+(?:[/?#]\S*)?$", value):
            raise ValueError(f"{value!r} is not an absolute http(s) URL")
        return value

    @field_validator("allowed_redirect_hosts")
    @classmethod
    def _host_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not re.match(
                r"^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$", host
            ):
                raise ValueError(f"{host!r} is not a host name (e.g. 'www.example.com')")
        return tuple(host.lower() for host in value)


class LoggingSettings(_Section):
    """JSON logs on stderr: the level, and whether every request gets an access-log line."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True


class CallbacksSettings(_Section):
    """The platform's callback receiver, ``POST /_paywall/callbacks/{secret}`` on the public
    listener. ``secret`` empty: the endpoint is off (404). ``allowed_networks``: only callbacks
    from these networks (the client address, read through ``trusted_proxies``) are accepted;
    empty: from anywhere. ``max_body``: a larger body is a 413, read no further.

    A callback that names no customer (none of its customer-id fields is set) is acknowledged
    with 202, invalidates nothing, and is counted (``result="no_customer"``) and logged: the
    cached answers it might concern expire by ``access.max_ttl``. It never flushes the caches.
    """

    secret: SecretStr = SecretStr("")
    allowed_networks: tuple[str, ...] = ()
    max_body: int = Field(default=65_536, ge=1_024, le=10_485_760)

    @field_validator("secret")
    @classmethod
    def _path_safe(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        # Never quote the value: it is a secret, and error messages are printed.
        if secret and not re.fullmatch(r"[A-Za-z0-9._~\-]{16,256}", secret):
            raise ValueError(
                "expected 16 to 256 characters from A-Z a-z 0-9 . _ ~ - "
                "(it is part of a URL path), e.g. from `openssl rand -hex 32`"
            )
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _ip_networks(value)


class RouteSettings(_Section):
    """One ``[[routes]]`` entry: a path glob, the methods it covers, and what it requires."""

    path: str
    methods: tuple[str, ...] = ("GET", "HEAD")
    access_rights: tuple[str, ...] = ()
    require: Literal["any", "all"] = "any"
    public: bool = False

    @field_validator("path")
    @classmethod
    def _valid_glob(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"route path {value!r} must start with '/'")
        compile_pattern(value)  # raises ValueError naming the pattern and the problem
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in value)
        unknown = sorted(set(upper) - HTTP_METHODS)
        if unknown:
            raise ValueError(f"unknown HTTP method(s) {', '.join(unknown)}")
        if not upper:
            raise ValueError('methods must not be empty (use ["*"] for every method)')
        return upper

    @model_validator(mode="after")
    def _public_xor_rights(self) -> RouteSettings:
        if self.public and self.access_rights:
            raise ValueError(f"route {self.path!r} is public and also lists access_rights")
        if not self.public and not self.access_rights:
            raise ValueError(f"route {self.path!r} needs access_rights or public = true")
        return self

    def to_route(self) -> Route:
        methods = None if "*" in self.methods else frozenset(self.methods)
        if self.public:
            return Route(self.path, methods, RouteKind.PUBLIC)
        rule = AccessRule(tuple(dict.fromkeys(self.access_rights)), self.require)
        return Route(self.path, methods, RouteKind.PROTECTED, rule)


class Settings(BaseSettings):
    """The whole configuration. Sections mirror the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    platform: PlatformSettings = PlatformSettings()
    access: AccessSettings = AccessSettings()
    cache: CacheSettings = CacheSettings()
    server: ServerSettings = ServerSettings()
    logging: LoggingSettings = LoggingSettings()
    callbacks: CallbacksSettings = CallbacksSettings()
    routes: tuple[RouteSettings, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides what the file (passed as init values) says.
        return env_settings, init_settings

    def route_table(self) -> RouteTable:
        return RouteTable(
            [route.to_route() for route in self.routes],
            default=RouteKind(self.access.default_policy),
            case_sensitive=self.access.case_sensitive_paths,
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def load_settings(path: Path | None = None) -> Settings:
    """Load the TOML file at ``path`` (defaults only if None) with environment overrides."""
    data = _read_toml(path) if path is not None else {}
    source = str(path) if path is not None else "configuration"
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
