"""JSON log lines on stderr, with secrets redacted.

One JSON object per line: ``ts`` (UTC, milliseconds), ``level``, ``logger``, ``msg``, the
record's ``fields`` dict (``log.info("request", extra={"fields": {...}})``) merged in, and
``exc`` when there is a traceback. Tokens, session cookies and API credentials are replaced by
``[redacted]`` wherever they appear: in the message, in field values, in tracebacks
(:class:`gateway.redaction.Redactor`, also re-exported here).

The access log's lines (one per request) have the same shape and redaction, but are made and
written in batches off the request path: :mod:`gateway.access_log`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from gateway.config import LoggingSettings
from gateway.redaction import REDACTED, Redactor

__all__ = ["REDACTED", "JsonFormatter", "Redactor", "configure_logging"]

CORE_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})


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
    stream: TextIO | None = None,
) -> None:
    """JSON lines on ``stream`` (default: stderr) at ``settings.level``; the access log on or
    off. Process-wide, like the logging module: a second call replaces the first.

    ``secret_cookie`` / ``secret_params`` name the configured session cookie and transfer-token
    parameter, redacted in addition to the defaults. The access log (:mod:`gateway.access_log`:
    logger ``gateway.access``, one line per request, written in batches by a thread of its own)
    is on whenever ``access_log`` is true, whatever the level; aiohttp's own access log is
    silenced.
    """
    from gateway import access_log  # it builds on this module

    out = stream if stream is not None else sys.stderr
    redactor = Redactor(secret_cookie=secret_cookie, secret_params=secret_params)
    handler = _GatewayHandler(out)
    handler.setFormatter(JsonFormatter(redactor))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())

    access_log.install(access_log.AccessLog(redactor, out) if settings.access_log else None)

    logging.getLogger("aiohttp.access").disabled = True
