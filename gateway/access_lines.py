"""The access log's lines: what :mod:`gateway.access_log` makes of the entries requests leave
behind, exactly the JSON :class:`gateway.logs.JsonFormatter` would write.

The method, the path, the verdict, the reason (a 400's may quote the refused path) and the
cache go through :meth:`Redactor.text <gateway.redaction.Redactor.text>` once per distinct
value and are remembered; the status, a customer id of ASCII digits and an address the gateway
wrote itself hold nothing to redact or escape and are written as they are. Any other shape
takes JsonFormatter's own path. Apart from :mod:`gateway.access_log` (threads, forks, weak
references) so that the compiled build (:mod:`gateway.compiled`) can compile it: interpreted,
the access log cost a cached decision about 12.6 µs of CPU per request (``make bench``, row 1
against row 2), most of it here.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from time import time as wall_clock
from typing import Any, TypeVar

from gateway.redaction import REDACTED, Redactor

__all__ = ["FIELDS", "LOGGER", "Entry", "Intake", "LineFormatter"]

LOGGER = "gateway.access"
FIELDS = (
    "method",
    "path",
    "status",
    "verdict",
    "reason",
    "cache",
    "customer_id",
    "client",
    "duration_ms",
)
# Remembered encodings: the method, verdict, reason and cache vocabularies (small), and paths
# (many: bounded, cleared when full, and only short ones).
_MEMO_SIZE = 4096
_MEMO_MAX_LENGTH = 512
# What str(ipaddress.ip_address(...)) is made of: nothing in it can be redacted or escaped.
_ADDRESS_CHARS = "0123456789abcdef.:"
_INFINITY = float("inf")
_PLAIN_MILLIS = 1e12  # durations (ms) below this are written without repr (see line())
# A timestamp's ending per millisecond (".042Z"): formatting the number costs a line more than
# the rest of its timestamp.
_MILLIS = [f".{millis:03d}Z" for millis in range(1000)]

K = TypeVar("K")

Entry = tuple[float, str, str, int, str, str, str, str | None, str, float]
"""What a request leaves behind: wall-clock time, method, path, status, verdict, reason, cache,
customer id, client address, duration in seconds."""


class Intake:
    """The request path's half of an access log (:class:`gateway.access_log.AccessLog`, which
    keeps the rest: formatting chunks, the writer thread, flushes, forks), here so that it runs
    compiled: :meth:`log` is what every request pays.

    ``lines``: entries logged and not formatted yet (and the flushes' events among them);
    ``formatted``: lines formatted and not written yet; ``soon``: an event loop will format the
    waiting lines; ``idle``: no writer waits on a timer, the next line wakes it. The access
    log changes them under its own locks; :meth:`log` appends without one (a deque's append is
    atomic) and calls ``format_soon`` every ``chunk`` lines, ``drop`` for a line beyond
    ``max_lines``, ``wake`` when the writer is idle."""

    def __init__(
        self,
        max_lines: int,
        chunk: int,
        format_soon: Callable[[], None],
        drop: Callable[[], None],
        wake: Callable[[], None],
    ) -> None:
        self.lines: deque[Any] = deque()
        self.formatted = 0
        self.soon = False
        self.idle = True
        self.max_lines = max_lines
        self._chunk = chunk
        self._format_soon = format_soon
        self._drop = drop
        self._wake = wake

    def log(
        self,
        method: Any,
        path: Any,
        status: Any,
        verdict: Any,
        reason: Any,
        cache: Any,
        customer_id: Any,
        client: Any,
        duration: Any,
    ) -> None:
        """One request's line (:meth:`AccessLog.log <gateway.access_log.AccessLog.log>`); its
        values taken as they come (``Any``: compiled, declared types would be checked or
        converted, not written as logged)."""
        lines = self.lines
        if len(lines) + self.formatted < self.max_lines:
            lines.append(
                (
                    wall_clock(),
                    method,
                    path,
                    status,
                    verdict,
                    reason,
                    cache,
                    customer_id,
                    client,
                    duration,
                )
            )
            if len(lines) >= self._chunk and not self.soon:
                self._format_soon()
        else:
            self._drop()
        if self.idle:
            self._wake()


class LineFormatter:
    """Encodes :data:`Entry` values as access-log lines, redacted by ``redactor``. Keeps memos:
    one thread at a time (the access log's formatting lock)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        # Remembered encodings, and the timestamp of the current second.
        self._words: dict[str, str] = {}
        self._paths: dict[str, str] = {}
        self._clients: dict[str, str] = {}
        self._middles: dict[tuple[Any, ...], str] = {}  # see line()
        self._stamp = (-1, "")  # (second, its text): one attribute, replaced whole
        # A configured secret name that is also a field's name: JsonFormatter would redact the
        # whole field, and so does the general path.
        self._fast = not any(redactor.is_secret_key(name) for name in FIELDS)

    def _timestamp(self, created: float) -> str:
        """``created`` as JsonFormatter writes it (LogRecord's arithmetic for the msecs)."""
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)))
            self._stamp = stamp
        millis = int((created - second) * 1000)
        if 0 <= millis < 1000:  # (always, for a time after 1970)
            return stamp[1] + _MILLIS[millis]
        return f"{stamp[1]}.{millis:03d}Z"

    def line(self, entry: tuple[Any, ...]) -> str:
        """One request's line (with its newline). ``entry`` is an :data:`Entry` as a request
        left it, its values taken as they come (``Any``): a compiled build would otherwise
        check or convert them (True to 1, 200.0 refused) instead of writing what was logged."""
        if not self._fast:
            return self._general_line(entry)
        created, method, path, status, verdict, reason, cache, customer_id, client, seconds = entry
        # The fields from the method to the customer id repeat (a site's pages, its
        # subscribers): encoded once per combination. Only for plain str / int values: equal
        # values of other types may encode differently (200 == 200.0, not as text).
        if (
            type(status) is int
            and type(method) is str
            and type(path) is str
            and type(verdict) is str
            and type(reason) is str
            and type(cache) is str
            and (customer_id is None or type(customer_id) is str)
        ):
            key = (method, path, status, verdict, reason, cache, customer_id)
            middle = self._middles.get(key)
            if middle is None:
                middle = _remember(
                    self._middles,
                    key,
                    len(path),
                    self._middle(method, path, status, verdict, reason, cache, customer_id),
                )
        else:
            middle = self._middle(method, path, status, verdict, reason, cache, customer_id)
        client_ = self._clients.get(client) if type(client) is str else None
        if client_ is None:
            client_ = _address(client) or self._value(client)
            if type(client) is str:
                _remember(self._clients, client, len(client), client_)
        millis = seconds * 1000
        if type(millis) is float and -_PLAIN_MILLIS < millis < _PLAIN_MILLIS:
            # repr(round(millis, 3)), from one correctly rounded conversion instead of three
            # (both round the exact binary value half to even): below 1e12, that decimal of at
            # most 15 digits is the shortest that reads back as the rounded float.
            duration_ = f"{millis:.3f}".rstrip("0")
            if duration_[-1] == ".":
                duration_ += "0"
        else:
            duration = round(millis, 3)
            if type(duration) is float and -_INFINITY < duration < _INFINITY:
                duration_ = repr(duration)
            else:
                duration_ = self._value(duration)
        return (
            f'{{"ts":"{self._timestamp(created)}","level":"info","logger":"{LOGGER}",'
            f'"msg":"request",{middle},"client":{client_},"duration_ms":{duration_}}}\n'
        )

    def _middle(
        self,
        method: Any,
        path: Any,
        status: Any,
        verdict: Any,
        reason: Any,
        cache: Any,
        customer_id: Any,
    ) -> str:
        words = self._words
        method_ = words.get(method) or self._word(method)
        path_ = self._paths.get(path) or self._path(path)
        status_ = str(status) if type(status) is int else self._value(status)
        verdict_ = words.get(verdict) or self._word(verdict)
        reason_ = words.get(reason) or self._word(reason)
        cache_ = words.get(cache) or self._word(cache)
        customer_ = _customer_id(customer_id) or self._value(customer_id)
        return (
            f'"method":{method_},"path":{path_},"status":{status_},"verdict":{verdict_},'
            f'"reason":{reason_},"cache":{cache_},"customer_id":{customer_}'
        )

    def _general_line(self, entry: tuple[Any, ...]) -> str:
        """JsonFormatter's own way, for a configuration that names a field as a secret."""
        created, *values, seconds = entry
        out: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": "info",
            "logger": LOGGER,
            "msg": "request",
        }
        redactor = self._redactor
        for name, value in zip(FIELDS, [*values, round(seconds * 1000, 3)], strict=True):
            out[name] = REDACTED if redactor.is_secret_key(name) else redactor.value(value)
        return json.dumps(out, separators=(",", ":"), default=str) + "\n"

    def dropped_line(self, dropped: int) -> str:
        """The warning that ``dropped`` lines were left out."""
        return (
            f'{{"ts":"{self._timestamp(wall_clock())}","level":"warning","logger":"{LOGGER}",'
            f'"msg":"access log lines dropped","dropped":{dropped}}}\n'
        )

    def _value(self, value: object) -> str:
        """Any value, redacted and encoded as JsonFormatter would."""
        return json.dumps(self._redactor.value(value), separators=(",", ":"), default=str)

    def _word(self, value: object) -> str:
        if not isinstance(value, str):
            return self._value(value)
        return _remember(self._words, value, len(value), self._value(value))

    def _path(self, value: object) -> str:
        if not isinstance(value, str):
            return self._value(value)
        encoded = encode_basestring_ascii(self._redactor.text(value))
        return _remember(self._paths, value, len(value), encoded)


def _customer_id(value: Any) -> str | None:
    """A customer id's encoding when it is the usual ASCII digits (None: something else)."""
    if value is None:
        return "null"
    if type(value) is str and value.isdigit() and value.isascii():
        return f'"{value}"'
    return None


def _address(value: Any) -> str | None:
    """An address's encoding when it is one the gateway wrote (None: something else)."""
    if type(value) is str and value and not value.strip(_ADDRESS_CHARS):
        return f'"{value}"'
    return None


def _remember(memo: dict[K, str], key: K, length: int, encoded: str) -> str:
    """``encoded``, kept in ``memo`` under ``key`` unless its text is longer than
    ``_MEMO_MAX_LENGTH`` (``length``); a full memo is cleared first."""
    if length <= _MEMO_MAX_LENGTH:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = encoded
    return encoded
