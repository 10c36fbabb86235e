"""The gateway's own answers: redirects, the session cookie, deny pages, errors — as
:class:`Reply` values that every driver sends as they are.

Every redirect target is built from the *normalised* path (never the raw one: ``//evil.com``
would be a protocol-relative URL) or checked against the configured hosts.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from urllib.parse import quote, urlsplit

from gateway.access.outcome import AccessOutcome, Verdict
from gateway.config import ServerSettings
from gateway.errors import BadRequest, ConfigError
from gateway.http.forward import strip_query_param
from gateway.http.request import Visitor, split_target, valid_host
from gateway.resources import paywall_template_path

__all__ = [
    "HTML",
    "JSON",
    "NO_STORE",
    "TEXT",
    "Pages",
    "Reply",
    "error_reply",
    "load_template",
    "text_reply",
]

NO_STORE = "no-store"
HTML = "text/html; charset=utf-8"
JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

_DEFAULT_TEMPLATE = paywall_template_path()  # gateway/resources/paywall.html, package data


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class Reply:
    """A complete answer of the gateway's own: status, headers (``Content-Type`` among them
    when there is a body) and body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def __init__(
        self, status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        self.status = status
        self.headers = [] if headers is None else headers
        self.body = body

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


def text_reply(status: int, text: str, *headers: tuple[str, str]) -> Reply:
    return Reply(status, [("Content-Type", TEXT), *headers], text.encode())


def error_reply(
    as_json: bool, status: int, error: str, message: str, text: str | None = None
) -> Reply:
    """A gateway-made error: JSON ``{error, message, status}`` or plain ``text`` (default: the
    message)."""
    if as_json:
        body = json.dumps({"error": error, "message": message, "status": status})
        return Reply(status, [("Content-Type", JSON)], body.encode())
    return text_reply(status, (text or message) + "\n")


def bad_request_reply(as_json: bool, message: str) -> Reply:
    """400 for input the gateway will not guess about; the message names the problem."""
    reply = error_reply(as_json, 400, "bad_request", message, f"Bad request: {message}")
    reply.headers.append(("Cache-Control", NO_STORE))
    return reply


def load_template(server: ServerSettings) -> Template:
    """The deny-page template; ConfigError naming the file if it cannot be read."""
    path = Path(server.paywall_template) if server.paywall_template else _DEFAULT_TEMPLATE
    try:
        return Template(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"server.paywall_template: cannot read {path}: {exc}") from None


_PAGES = {
    401: ("Please log in", "This content is for subscribers. Log in to read on."),
    403: ("Subscribers only", "Your account does not include this content."),
    503: (
        "Temporarily unavailable",
        "We cannot check your subscription right now. Please try again in a moment.",
    ),
}
_JSON_ERRORS = {401: "unauthenticated", 403: "access_denied", 503: "unavailable"}


class Pages:
    """Builds the gateway's own answers from one ``[server]`` configuration."""

    def __init__(self, server: ServerSettings, template: Template) -> None:
        self._server = server
        self._template = template
        self._param = server.transfer_token_param
        self._path_parameters = server.allow_path_parameters
        self._allowed_hosts = frozenset(server.allowed_redirect_hosts)
        cookie = ["Path=/", "HttpOnly", "SameSite=Lax"]
        if server.cookie_secure:
            cookie.append("Secure")
        if server.cookie_domain:
            cookie.append(f"Domain={server.cookie_domain}")
        if server.cookie_max_age:
            cookie.append(f"Max-Age={server.cookie_max_age}")
        self._cookie_attributes = "; ".join(cookie)

    # --- URLs ---------------------------------------------------------------------------------

    def location(self, visitor: Visitor) -> str:
        """The visitor's URL as a path (normalised) and query without the transfer token."""
        query = strip_query_param(visitor.query, self._param)
        return f"{visitor.path}?{query}" if query else visitor.path

    def absolute_url(self, visitor: Visitor) -> str | None:
        """The visitor's URL, absolute, without the transfer token; None if its host is not
        one we may send browsers to."""
        if visitor.host is None or not self.host_allowed(visitor.host, visitor.host):
            return None
        return f"{visitor.scheme}://{visitor.host}{self.location(visitor)}"

    def host_allowed(self, host: str, own_host: str | None) -> bool:
        host = host.lower()
        if self._allowed_hosts:
            return host in self._allowed_hosts
        return host == own_host

    def return_target(self, value: str, visitor: Visitor) -> str:
        """A ``return_to`` value made safe: a same-site path, or an absolute http(s) URL on an
        allowed host; BadRequest otherwise (never an open redirect)."""
        if any(ord(ch) < 0x21 or ch == "\\" for ch in value):
            raise BadRequest("return_to is not a valid URL")
        if value.startswith("/") and not value.startswith("//"):
            path, query = split_target(value, path_parameters=self._path_parameters)
            query = strip_query_param(query, self._param)
            return f"{path}?{query}" if query else path
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            raise BadRequest("return_to must be a path or an http(s) URL")
        host = valid_host(parts.netloc)
        if host is None or not self.host_allowed(host, visitor.host):
            raise BadRequest("return_to points to a host that is not allowed")
        path, query = split_target(parts.path or "/", path_parameters=self._path_parameters)
        query = strip_query_param(parts.query, self._param)
        return f"{parts.scheme}://{host}{path}" + (f"?{query}" if query else "")

    def login_location(self, return_url: str | None) -> str | None:
        login = self._server.login_url
        if not login:
            return None
        if return_url is None:
            return login
        separator = "&" if "?" in login else "?"
        return f"{login}{separator}{self._server.login_return_param}={quote(return_url, safe='')}"

    # --- answers ------------------------------------------------------------------------------

    def session_cookie(self, token: str) -> str:
        # The identity provider hands out only cookie-fit tokens (IdentityProvider's contract;
        # PlenigoClient refuses any other as a bad platform response where it reads it).
        return f"{self._server.session_cookie}={token}; {self._cookie_attributes}"

    def redirect(self, location: str, *, session: str | None = None) -> Reply:
        headers = [("Location", location), ("Cache-Control", NO_STORE)]
        if session is not None:
            headers.append(("Set-Cookie", self.session_cookie(session)))
        return Reply(303, headers)

    def deny(self, visitor: Visitor, outcome: AccessOutcome, *, login_redirect: bool) -> Reply:
        """The answer for a visitor who may not pass: 401 (or the login redirect), 403, 503."""
        verdict = outcome.verdict
        if verdict is Verdict.UNAUTHENTICATED:
            status = 401
        elif verdict is Verdict.UNAVAILABLE:
            status = 503
        else:
            status = 403
        return_url = self.absolute_url(visitor)
        login = self.login_location(return_url)
        as_json = visitor.wants_json
        if (
            status == 401
            and login_redirect
            and self._server.login_redirect
            and login is not None
            and not as_json
        ):
            return self.redirect(login)
        if as_json:
            body: dict[str, object] = {
                "error": _JSON_ERRORS[status],
                "reason": outcome.reason,
                "status": status,
            }
            if status == 401 and login is not None:
                body["login_url"] = login
            headers = [("Content-Type", JSON)]
            content = json.dumps(body)
        else:
            headers = [("Content-Type", HTML)]
            content = self.page(status, outcome.reason, visitor, login)
        headers.append(("Cache-Control", NO_STORE))
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="paywall"'))
        elif status == 503:
            headers.append(("Retry-After", "5"))
        return Reply(status, headers, content.encode())

    def page(self, status: int, reason: str, visitor: Visitor, login: str | None) -> str:
        title, message = _PAGES[status]
        login_link = (
            f'<a class="login" href="{html.escape(login)}">Log in or subscribe</a>'
            if login is not None and status != 503
            else ""
        )
        return self._template.safe_substitute(
            status=status,
            title=html.escape(title),
            message=html.escape(message),
            reason=html.escape(reason),
            path=html.escape(visitor.path),
            login_url=html.escape(login or ""),
            login_link=login_link,
        )
