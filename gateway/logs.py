"""JSON log lines on stderr, with secrets redacted.

One JSON object per line: ``ts`` (UTC, milliseconds), ``level``, ``logger``, ``msg``, the
record's ``fields`` dict (``log.info("request", extra={"fields": {...}})``) merged in, and
``exc`` when there is a traceback. Tokens, session cookies and API credentials are replaced by
``[redacted]`` wherever they appear: in the message, in field values, in tracebacks.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.config import LoggingSettings

REDACTED = "[redacted]"
DEFAULT_SESSION_COOKIE = "paywall_session"
SECRET_QUERY_PARAMS = ("transferToken", "sessionToken", "customerSession", "token")
# Field keys compared after lower-casing and turning "-" into "_".
SECRET_FIELD_KEYS = frozenset(
    {
        "token",
        "session_token",
        "sessiontoken",
        "transfer_token",
        "transfertoken",
        "customer_session",
        "customersession",
        "cookie",
        "set_cookie",
        "authorization",
        "proxy_authorization",
        "x_plenigo_token",
        "x_plenigo_customer_session",
        "api_token",
    }
)
CORE_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})

# A value ends at a separator of the surrounding syntax: query (& #), cookie (; ,), quotes,
# whitespace, closing brackets, or an encoded "&" (%26) inside an encoded URL.
_VALUE = r"""(?:(?!%26)[^&#;,\s"'<>)}\]])*"""
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
# Header-style "Name: value" / "Name=value"; an auth scheme word before the credential goes too.
_HEADERS = re.compile(
    r"(?i)(?<![A-Za-z0-9-])((?:proxy-)?authorization|x-plenigo-token|x-plenigo-customer-session)"
    r"""(["']?\s*[:=]\s*["']?)(?:(?:basic|bearer|digest|token)\s+)?[^\s"',;)}\]]+"""
)
# 'name': 'value' / "name": "value" (reprs of dicts, JSON bodies).
_MAPPING_TEMPLATE = r"""(?i)(["'](?:NAMES)["']\s*:\s*["'])[^"']*"""
# name=value, also URL-encoded (%3D) inside another URL's query parameter.
_ASSIGN_TEMPLATE = r"(?i)(?:(?<![A-Za-z0-9])|(?<=%3[fF])|(?<=%26))((?:NAMES)(?:=|%3[dD]))" + _VALUE
# Every rule's name contains one of these (lower case): a string without any skips the regexes.
_NEEDLES = frozenset({"token", "session", "cookie", "authorization", "bearer"})


def _alternation(names: Iterable[str]) -> str:
    # Longest first, so "token" never shadows a longer name sharing its start.
    return "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))


class Redactor:
    """Replaces secrets in strings and in structured field values. Patterns compile once."""

    def __init__(
        self,
        *,
        secret_cookie: str | None = None,
        secret_params: Iterable[str] = (),
    ) -> None:
        cookies = {DEFAULT_SESSION_COOKIE}
        if secret_cookie:
            cookies.add(secret_cookie)
        params = {*SECRET_QUERY_PARAMS, *(p for p in secret_params if p)}
        names = _alternation(params | cookies)
        self._assign = re.compile(_ASSIGN_TEMPLATE.replace("NAMES", names))
        self._mapping = re.compile(
            _MAPPING_TEMPLATE.replace("NAMES", _alternation(params | cookies | SECRET_FIELD_KEYS))
        )
        self._secret_keys = SECRET_FIELD_KEYS | {
            name.lower().replace("-", "_") for name in params | cookies
        }
        extra = {name.lower() for name in params | cookies}
        self._needles = tuple(
            _NEEDLES | {n for n in extra if not any(needle in n for needle in _NEEDLES)}
        )

    def text(self, value: str) -> str:
        """``value`` with every secret it carries replaced by ``[redacted]``."""
        lowered = value.lower()
        if not any(needle in lowered for needle in self._needles):
            return value
        if "=" in value or "%" in value:
            value = self._assign.sub(r"\1" + REDACTED, value)
        if ":" in value or "=" in value:
            value = self._mapping.sub(r"\1" + REDACTED, value)
            value = _HEADERS.sub(r"\1\2" + REDACTED, value)
        return _BEARER.sub(r"\1 " + REDACTED, value)

    def is_secret_key(self, key: str) -> bool:
        return key.lower().replace("-", "_") in self._secret_keys

    def value(self, value: Any) -> Any:
        """A JSON-ready copy of a field value, redacted. Scalars other than strings pass as-is."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED if self.is_secret_key(str(k)) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self.text(str(value))


class JsonFormatter(logging.Formatter):
    """Formats a record as one redacted JSON object (no newline inside)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor()

    def format(self, record: logging.LogRecord) -> str:
        redactor = self.redactor
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redactor.text(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                name = str(key)
                if name in CORE_KEYS:
                    continue  # the envelope is not overridable
                out[name] = REDACTED if redactor.is_secret_key(name) else redactor.value(value)
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = self.formatException(record.exc_info)
        if exc_text:
            out["exc"] = redactor.text(exc_text)
        if record.stack_info:
            out["stack"] = redactor.text(self.formatStack(record.stack_info))
        return json.dumps(out, separators=(",", ":"), default=str)


class _GatewayHandler(logging.StreamHandler[Any]):
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(
    settings: LoggingSettings,
    *,
    secret_cookie: str | None = None,
    secret_params: Iterable[str] = (),
) -> None:
    """JSON lines on stderr at ``settings.level``; the access log on or off.

    ``secret_cookie`` / ``secret_params`` name the configured session cookie and transfer-token
    parameter, redacted in addition to the defaults. The ``gateway.access`` logger logs at INFO
    whenever ``access_log`` is true, whatever the level; aiohttp's own access log is silenced.
    """
    handler = _GatewayHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(Redactor(secret_cookie=secret_cookie, secret_params=secret_params))
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())

    access = logging.getLogger("gateway.access")
    access.disabled = not settings.access_log
    access.setLevel(logging.INFO if settings.access_log else logging.NOTSET)

    logging.getLogger("aiohttp.access").disabled = True
