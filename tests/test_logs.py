"""JSON log lines: their shape, and that no token, cookie or credential survives into them."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import LoggingSettings
from gateway.logs import REDACTED, JsonFormatter, Redactor, configure_logging

TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def format_record(
    msg: str,
    *args: object,
    fields: Any = None,
    formatter: JsonFormatter | None = None,
    level: int = logging.INFO,
) -> dict[str, Any]:
    record = logging.LogRecord("gateway.test", level, __file__, 1, msg, args or None, None)
    if fields is not None:
        record.fields = fields
    line = (formatter or JsonFormatter()).format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


class Capture:
    """A logger whose records go through a JsonFormatter into a string buffer."""

    def __init__(self, formatter: JsonFormatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.logger = logging.getLogger("gateway.test.capture")
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def output(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output().splitlines()]

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = True


@pytest.fixture
def capture() -> Iterator[Capture]:
    cap = Capture(JsonFormatter(Redactor(secret_cookie="sid_custom", secret_params=["tt"])))
    try:
        yield cap
    finally:
        cap.close()


# --- shape ------------------------------------------------------------------------------------


def test_envelope_fields() -> None:
    record = logging.LogRecord(
        "gateway.access", logging.WARNING, __file__, 1, "%s of %d", ("one", 2), None
    )
    record.created = 1_700_000_000.123456
    record.msecs = 123.456
    out = json.loads(JsonFormatter().format(record))
    assert out == {
        "ts": "2023-11-14T22:13:20.123Z",
        "level": "warning",
        "logger": "gateway.access",
        "msg": "one of 2",
    }


def test_timestamp_is_utc_with_milliseconds() -> None:
    assert TS_FORMAT.match(format_record("x")["ts"])


def test_fields_are_merged_with_their_types() -> None:
    out = format_record(
        "request",
        fields={
            "method": "GET",
            "path": "/articles/1",
            "status": 200,
            "duration_ms": 1.25,
            "cache": None,
            "stale": False,
            "rights": ("premium", "plus"),
        },
    )
    assert out["msg"] == "request"
    assert out["method"] == "GET"
    assert out["path"] == "/articles/1"
    assert out["status"] == 200
    assert out["duration_ms"] == 1.25
    assert out["cache"] is None
    assert out["stale"] is False
    assert out["rights"] == ["premium", "plus"]


def test_fields_cannot_overwrite_the_envelope() -> None:
    out = format_record("real", fields={"msg": "fake", "level": "fake", "logger": "fake"})
    assert (out["msg"], out["level"], out["logger"]) == ("real", "info", "gateway.test")


def test_unserialisable_field_value_becomes_a_redacted_string() -> None:
    class Url:
        def __str__(self) -> str:
            return "http://h/p?sessionToken=obj-secret"

    out = format_record("x", fields={"url": Url()})
    assert out["url"] == f"http://h/p?sessionToken={REDACTED}"


def test_fields_that_are_not_a_mapping_are_ignored() -> None:
    out = format_record("x", fields="token=oops")
    assert set(out) == {"ts", "level", "logger", "msg"}


def test_traceback_goes_to_exc_redacted(capture: Capture) -> None:
    try:
        raise ValueError("bad url https://api/sessions/validate?sessionToken=exc-secret")
    except ValueError:
        capture.logger.exception("platform call failed")
    (line,) = capture.lines()
    assert line["msg"] == "platform call failed"
    assert line["level"] == "error"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad url" in line["exc"]
    assert f"sessionToken={REDACTED}" in line["exc"]
    assert "exc-secret" not in capture.output()


def test_multi_line_message_stays_one_line(capture: Capture) -> None:
    capture.logger.warning("first\nsecond")
    assert capture.output().count("\n") == 1
    assert capture.lines()[0]["msg"] == "first\nsecond"


# --- redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "GET /a?transferToken=tt-secret&x=1",
            f"GET /a?transferToken={REDACTED}&x=1",
            id="transfer-token",
        ),
        pytest.param(
            "/a?x=1&TRANSFERTOKEN=tt-secret#frag",
            f"/a?x=1&TRANSFERTOKEN={REDACTED}#frag",
            id="param-name-case-insensitive",
        ),
        pytest.param(
            "https://api/sessions/validate?sessionToken=st-secret",
            f"https://api/sessions/validate?sessionToken={REDACTED}",
            id="session-token",
        ),
        pytest.param(
            "{'customerSession': 'cs-secret'} from ?customerSession=cs-secret",
            f"{{'customerSession': '{REDACTED}'}} from ?customerSession={REDACTED}",
            id="customer-session",
        ),
        pytest.param("/x?token=t-secret", f"/x?token={REDACTED}", id="token"),
        pytest.param(
            "return_to=https%3A%2F%2Fh%2Fa%3FtransferToken%3Denc-secret%26y%3D2",
            f"return_to=https%3A%2F%2Fh%2Fa%3FtransferToken%3D{REDACTED}%26y%3D2",
            id="url-encoded-inside-another-url",
        ),
        pytest.param(
            "Authorization: Bearer abc.def-ghi_jkl", f"Authorization: {REDACTED}", id="auth-header"
        ),
        pytest.param("sent bearer b-secret==", f"sent bearer {REDACTED}", id="bearer-anywhere"),
        pytest.param(
            "Authorization: Basic dXNlcjpwYXNz", f"Authorization: {REDACTED}", id="basic-auth"
        ),
        pytest.param(
            "Cookie: a=1; paywall_session=ck-secret; b=2",
            f"Cookie: a=1; paywall_session={REDACTED}; b=2",
            id="default-session-cookie",
        ),
        pytest.param(
            "Cookie: sid_custom=ck-secret", f"Cookie: sid_custom={REDACTED}", id="configured-cookie"
        ),
        pytest.param("/p?tt=tt-secret&a=b", f"/p?tt={REDACTED}&a=b", id="configured-param"),
        pytest.param(
            "<CIMultiDict('X-plenigo-token': 'api-secret', 'Accept': '*/*')>",
            f"<CIMultiDict('X-plenigo-token': '{REDACTED}', 'Accept': '*/*')>",
            id="api-token-header-repr",
        ),
        pytest.param(
            "X-plenigo-token: api-secret", f"X-plenigo-token: {REDACTED}", id="api-token-header"
        ),
        pytest.param(
            "X-Plenigo-Customer-Session: cs-secret",
            f"X-Plenigo-Customer-Session: {REDACTED}",
            id="customer-session-header",
        ),
        pytest.param(
            '{"transferToken": "json-secret", "n": 1}',
            f'{{"transferToken": "{REDACTED}", "n": 1}}',
            id="json-body",
        ),
        pytest.param("api_token=at-secret", f"api_token={REDACTED}", id="api-token-assignment"),
    ],
)
def test_redacts_secrets_in_text(text: str, expected: str) -> None:
    redactor = Redactor(secret_cookie="sid_custom", secret_params=["tt"])
    assert redactor.text(text) == expected
    assert format_record(text, formatter=JsonFormatter(redactor))["msg"] == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("/articles/the-token-economy?page=2", id="word-in-path"),
        pytest.param("mytoken=visible&session=visible", id="other-param-names"),
        pytest.param("a basic question about bearers", id="ordinary-words"),
        pytest.param("upstream unreachable: GET /a: ConnectionRefusedError(111)", id="plain"),
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert Redactor().text(text) == text


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "session_token",
        "transfer_token",
        "cookie",
        "authorization",
        "x-plenigo-token",
        "api_token",
        "Authorization",
        "X-Plenigo-Token",
        "Set-Cookie",
        "x-plenigo-customer-session",
    ],
)
def test_secret_field_keys_are_redacted(key: str) -> None:
    out = format_record("request", fields={key: "plain-value-secret", "path": "/a"})
    assert out[key] == REDACTED
    assert out["path"] == "/a"


def test_configured_names_are_secret_field_keys() -> None:
    formatter = JsonFormatter(Redactor(secret_cookie="sid_custom", secret_params=["tt"]))
    out = format_record(
        "x", fields={"sid_custom": "v-secret", "tt": "v-secret"}, formatter=formatter
    )
    assert (out["sid_custom"], out["tt"]) == (REDACTED, REDACTED)


def test_nested_values_are_redacted() -> None:
    out = format_record(
        "upstream",
        fields={
            "headers": {"Authorization": "Bearer n-secret", "Accept": "text/html"},
            "urls": ["/a?token=n-secret", "/b"],
        },
    )
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "text/html"}
    assert out["urls"] == [f"/a?token={REDACTED}", "/b"]


def test_real_access_record_keeps_nothing_secret(capture: Capture) -> None:
    capture.logger.info(
        "request %s",
        "GET https://news.example/a?transferToken=abc-transfer-secret&utm=mail",
        extra={
            "fields": {
                "method": "GET",
                "url": "https://news.example/a?transferToken=abc-transfer-secret&utm=mail",
                "status": 302,
                "verdict": "granted",
                "headers": {
                    "Authorization": "Bearer abc-bearer-secret",
                    "Cookie": "paywall_session=abc-cookie-secret",
                    "User-Agent": "curl/8",
                },
                "auth": "Bearer abc-bearer-secret",
                "cookie_header": "x=1; sid_custom=abc-custom-cookie-secret",
                "customer_id": "100001",
            }
        },
    )
    output = capture.output()
    assert "secret" not in output
    (line,) = capture.lines()
    assert line["msg"] == f"request GET https://news.example/a?transferToken={REDACTED}&utm=mail"
    assert line["url"] == f"https://news.example/a?transferToken={REDACTED}&utm=mail"
    assert line["headers"]["Authorization"] == REDACTED
    assert line["headers"]["Cookie"] == REDACTED
    assert line["headers"]["User-Agent"] == "curl/8"
    assert line["auth"] == f"Bearer {REDACTED}"
    assert line["cookie_header"] == f"x=1; sid_custom={REDACTED}"
    assert (line["status"], line["verdict"], line["customer_id"]) == (302, "granted", "100001")


# --- configure_logging ------------------------------------------------------------------------


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Restores the loggers configure_logging touches."""
    names = ("", "gateway.access", "aiohttp.access")
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.disabled, logger.propagate, logger.handlers[:]))
    try:
        yield
    finally:
        for logger, level, disabled, propagate, handlers in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.propagate = propagate
            logger.handlers[:] = handlers


def stderr_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("logging_state")
def test_configure_logging_writes_json_to_stderr_at_the_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(
        LoggingSettings(level="warning"), secret_cookie="sid_custom", secret_params=["tt"]
    )
    log = logging.getLogger("gateway.somewhere")
    log.info("not shown")
    log.warning("shown ?tt=cfg-secret sid_custom=cfg-secret")
    lines = stderr_lines(capsys.readouterr().err)
    assert [line["msg"] for line in lines] == [f"shown ?tt={REDACTED} sid_custom={REDACTED}"]
    assert lines[0]["logger"] == "gateway.somewhere"


@pytest.mark.usefixtures("logging_state")
def test_access_log_follows_its_switch(capsys: pytest.CaptureFixture[str]) -> None:
    access = logging.getLogger("gateway.access")
    configure_logging(LoggingSettings(level="warning", access_log=True))
    access.info("request", extra={"fields": {"status": 200}})
    configure_logging(LoggingSettings(level="debug", access_log=False))
    access.info("request", extra={"fields": {"status": 201}})
    logging.getLogger("gateway.decision").debug("decision")
    lines = stderr_lines(capsys.readouterr().err)
    assert [(line["logger"], line.get("status")) for line in lines] == [
        ("gateway.access", 200),
        ("gateway.decision", None),
    ]


@pytest.mark.usefixtures("logging_state")
def test_aiohttp_access_log_is_silenced_and_handler_not_duplicated(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LoggingSettings(level="debug"))
    configure_logging(LoggingSettings(level="debug"))
    logging.getLogger("aiohttp.access").info("GET / 200")
    logging.getLogger("gateway.x").info("once")
    lines = stderr_lines(capsys.readouterr().err)
    assert [line["msg"] for line in lines] == ["once"]
    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(ours) == 1
    assert isinstance(ours[0], logging.StreamHandler)
    assert ours[0].stream is sys.stderr
