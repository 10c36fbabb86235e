"""What the gateway's HTTP front-ends share: credentials, the visitor's URL, redirects, the
session cookie and the responses for visitors who may not pass.

Pure functions and one settings-bound :class:`Responder`; the handlers in
:mod:`gateway.web.app` do the I/O. Credentials are read in the precedence DESIGN.md fixes:
the transfer token in the query, then the session cookie, the ``X-plenigo-customer-session``
header and ``Authorization: Bearer``. Anything ambiguous or malformed there (two different
session cookies, a token with spaces or control characters, a transfer token given twice) is a
:class:`~gateway.errors.BadRequest`: guessing which one the visitor meant is how credentials get
mixed up.

Every redirect target is built from the *normalised* path (never the raw one: ``//evil.com``
would be a protocol-relative URL) or checked against the configured hosts.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import quote, urlsplit

from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.config import ServerSettings
from gateway.core.paths import normalise_path
from gateway.errors import BadRequest, ConfigError
from gateway.http.credentials import session_token, transfer_token
from gateway.service.outcome import AccessOutcome, Credentials, Verdict
from gateway.web.proxy import error_response, strip_query_param, wants_json

_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}"
    r"[A-Za-z0-9])?\.?(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?"
).fullmatch
_METHOD = re.compile(r"[A-Za-z]{1,20}").fullmatch

_DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "config" / "paywall.html"

NO_STORE = "no-store"


@dataclass(frozen=True, slots=True)
class Visitor:
    """The request as the visitor made it: behind nginx, the original one, not the subrequest.

    ``path`` is normalised; ``query`` is raw (still percent-encoded, may hold the transfer
    token); ``host`` is None when it is missing or not a valid host.
    """

    method: str
    path: str
    query: str
    scheme: str
    host: str | None
    headers: CIMultiDictProxy[str]

    @property
    def wants_json(self) -> bool:
        return wants_json(self.headers.get("Accept", ""))


def split_target(target: str, *, path_parameters: bool = False) -> tuple[str, str]:
    """A request target (``/path?query``) as (normalised path, raw query); BadRequest if the
    path is ambiguous (``;`` included, unless ``path_parameters``) or not in origin form."""
    raw_path, _, query = target.partition("?")
    query = query.partition("#")[0]
    return normalise_path(raw_path, path_parameters=path_parameters), query


def valid_host(value: str | None) -> str | None:
    """``value`` lower-cased if it is a host[:port], else None."""
    if value and _HOST(value):
        return value.lower()
    return None


def valid_method(value: str) -> str:
    if not _METHOD(value):
        raise BadRequest("malformed request method")
    return value.upper()


def credentials(
    headers: CIMultiDictProxy[str], query: str, server: ServerSettings, *, transfer: bool = True
) -> Credentials:
    """The visitor's credentials; ``transfer=False`` ignores the transfer token (auth_request:
    its exchange needs a response that can set a cookie)."""
    token = transfer_token(query, server.transfer_token_param) if transfer else None
    return Credentials(token, session_token(headers, server.session_cookie))


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


class Responder:
    """Builds the gateway's own responses from one ``[server]`` configuration."""

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

    # --- responses ----------------------------------------------------------------------------

    def session_cookie(self, token: str) -> str:
        # The identity provider hands out only cookie-fit tokens (IdentityProvider's contract;
        # PlenigoClient refuses any other as a bad platform response where it reads it).
        return f"{self._server.session_cookie}={token}; {self._cookie_attributes}"

    def redirect(self, location: str, *, session: str | None = None) -> web.Response:
        response = web.Response(status=303, headers={"Location": location})
        response.headers["Cache-Control"] = NO_STORE
        if session is not None:
            response.headers["Set-Cookie"] = self.session_cookie(session)
        return response

    def deny(
        self, visitor: Visitor, outcome: AccessOutcome, *, login_redirect: bool
    ) -> web.Response:
        """The response for a visitor who may not pass: 401 (or the login redirect), 403, 503."""
        verdict = outcome.verdict
        if verdict is Verdict.UNAUTHENTICATED:
            status = 401
        elif verdict is Verdict.UNAVAILABLE:
            status = 503
        else:
            status = 403
        return_url = self.absolute_url(visitor)
        login = self.login_location(return_url)
        if (
            status == 401
            and login_redirect
            and self._server.login_redirect
            and login is not None
            and not visitor.wants_json
        ):
            return self.redirect(login)
        if visitor.wants_json:
            body: dict[str, object] = {
                "error": _JSON_ERRORS[status],
                "reason": outcome.reason,
                "status": status,
            }
            if status == 401 and login is not None:
                body["login_url"] = login
            response = web.Response(
                status=status, text=json.dumps(body), content_type="application/json"
            )
        else:
            response = web.Response(
                status=status,
                text=self.page(status, outcome.reason, visitor, login),
                content_type="text/html",
            )
        response.headers["Cache-Control"] = NO_STORE
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="paywall"'
        elif status == 503:
            response.headers["Retry-After"] = "5"
        return response

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


def bad_request(as_json: bool, message: str) -> web.Response:
    """400 for input the gateway will not guess about; the message names the problem."""
    response = error_response(as_json, 400, "bad_request", message, f"Bad request: {message}")
    response.headers["Cache-Control"] = NO_STORE
    return response
