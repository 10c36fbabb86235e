"""JSON log lines: their shape, and that no token, cookie or credential survives into them."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from gateway import access_log
from gateway.config import LoggingSettings
from gateway.http.credentials import query_values
from gateway.http.names import cookie_name
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
    """Restores the loggers and the access log configure_logging touches."""
    names = ("", "gateway.access", "aiohttp.access")
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.disabled, logger.propagate, logger.handlers[:]))
    previous_access_log = access_log.current
    try:
        yield
    finally:
        for logger, level, disabled, propagate, handlers in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.propagate = propagate
            logger.handlers[:] = handlers
        access_log.install(previous_access_log)


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


def log_request(status: int) -> None:
    """One access-log line, the way Observer.logged hands it over, if the access log is on."""
    writer = access_log.current
    if writer is not None:
        writer.log(
            "GET", "/a?tt=cfg-secret", status, "public", "public", "none", None, "::1", 0.001
        )


@pytest.mark.usefixtures("logging_state")
def test_access_log_follows_its_switch(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(
        LoggingSettings(level="warning", access_log=True), secret_cookie="sid", secret_params=["tt"]
    )
    log_request(200)
    configure_logging(LoggingSettings(level="debug", access_log=False))  # writes what it had
    assert access_log.current is None
    log_request(201)
    logging.getLogger("gateway.decision").debug("decision")
    lines = stderr_lines(capsys.readouterr().err)
    assert [(line["logger"], line.get("status")) for line in lines] == [
        ("gateway.access", 200),
        ("gateway.decision", None),
    ]
    # At INFO whatever the level, redacted with the configured names.
    assert (lines[0]["level"], lines[0]["msg"], lines[0]["path"]) == (
        "info",
        "request",
        f"/a?tt={REDACTED}",
    )


@pytest.mark.usefixtures("logging_state")
def test_access_log_and_other_logs_share_the_stream(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=stream)
    logging.getLogger("gateway.somewhere").info("before")
    log_request(200)
    assert access_log.flush()
    logging.getLogger("gateway.somewhere").info("after")
    lines = stderr_lines(stream.getvalue())
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("gateway.somewhere", "before"),
        ("gateway.access", "request"),
        ("gateway.somewhere", "after"),
    ]
    assert capsys.readouterr().err == ""


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


# --- every spelling the gateway accepts as a credential ---------------------------------------

TOKEN = "Tk9-secret"


def _encoded(name: str, index: int, *, lower_hex: bool = False) -> str:
    """``name`` with its ``index``-th letter percent-encoded."""
    escape = f"%{ord(name[index]):02X}"
    return name[:index] + (escape.lower() if lower_hex else escape) + name[index + 1 :]


def _param_spellings(name: str) -> list[str]:
    """Spellings of a query parameter name the gateway's reader takes for ``name``: any case,
    any letter percent-encoded, "s" / "k" as the characters that case-fold to them."""
    spellings = {name, name.upper(), name.lower(), name.swapcase()}
    spellings |= {_encoded(name, i) for i in range(len(name))}
    spellings |= {_encoded(name, i, lower_hex=True) for i in range(len(name))}
    spellings.add("".join(f"%{ord(c):02x}" for c in name))
    spellings.add(name.replace("s", "%C5%BF").replace("k", "%E2%84%AA"))
    spellings.add(name.replace("s", "\u017f").replace("k", "\u212a"))
    return sorted(spellings)


PARAM_CASES = [
    pytest.param(name, spelling, id=f"{name}-{spelling}")
    for name in ("transferToken", "sessionToken", "customerSession", "tt")
    for spelling in _param_spellings(name)
]


@pytest.mark.parametrize(("name", "spelling"), PARAM_CASES)
def test_redacts_every_query_spelling_the_gateway_accepts(name: str, spelling: str) -> None:
    redactor = Redactor(secret_cookie="sid_custom", secret_params=["tt"])
    queries = [f"{spelling}={TOKEN}", f"utm=1&{spelling}={TOKEN}&b=2", f"a=1;{spelling}={TOKEN}"]
    for query in queries:
        # The gateway's own reader takes it for the parameter: a credential.
        assert query_values(query, name) == [TOKEN], query
        assert redactor.needs_scan(query)
        contexts = [
            f"GET /premium/a?{query} HTTP/1.1",
            f"https://news.example/a?{query}#top",
            f"b'GET /a?{query} HTTP/1.1\\r\\nHost: h\\r\\n'",
            # Inside another URL's return_to, encoded once more (the gateway decodes it once,
            # then reads the query).
            f"/_paywall/transfer?return_to={quote('/a?' + query, safe='')}",
        ]
        for text in contexts:
            out = redactor.text(text)
            assert TOKEN not in out, (text, out)
            assert REDACTED in out


COOKIE_SPELLINGS = [
    'paywall_session="{}"',
    "paywall_session ={}",
    " paywall_session = {}",
    'paywall_session = "{}"',
    "PAYWALL_SESSION={}",
    "Paywall_Session={}",
    "paywall%5Fsession={}",
    "paywall%5fsession={}",
    "%70aywall_session={}",
    "paywall_\u017fession={}",
    "sid_custom={}",
    "SID%5FCUSTOM={}",
]


@pytest.mark.parametrize("pair", COOKIE_SPELLINGS)
def test_redacts_every_cookie_spelling_the_gateway_reads_as_the_session(pair: str) -> None:
    redactor = Redactor(secret_cookie="sid_custom", secret_params=["tt"])
    cookie = pair.format(TOKEN)
    # The gateway's cookie reader takes this pair for the session cookie (and, unless it is
    # spelled exactly, refuses it as ambiguous: a credential either way).
    assert cookie_name(cookie) in ("paywall_session", "sid_custom")
    for text in (
        f"Cookie: a=1; {cookie}; b=2",
        f"Cookie: {cookie}",
        f"b'Cookie: {cookie}\\r\\nX-Note: a\\x01'",
        f"{{'Cookie': 'x=1; {cookie}'}}",
    ):
        assert redactor.needs_scan(text)
        out = redactor.text(text)
        assert TOKEN not in out, (text, out)


@pytest.mark.parametrize(
    "text",
    [
        "GET",
        "/premium/story-about-things/2024/06/01",
        "/premium/caf%C3%A9",  # a percent-escape, but no "=": no name=value to redact
        "granted",
        "127.0.0.1",
        "request",
        "upstream unreachable: GET /a: ConnectionRefusedError(111)",
    ],
)
def test_ordinary_lines_take_the_fast_path(text: str) -> None:
    redactor = Redactor(secret_cookie="sid_custom", secret_params=["tt"])
    assert not redactor.needs_scan(text)
    assert redactor.text(text) is text


@pytest.mark.parametrize(
    "text",
    [
        "/a?transfer%54oken=x",
        "/a?page=2&x%3Dy",
        "/a?tt%3Dx",
        "paywall%5Fsession=x",
        "/a?tran\u017fferToken=x",
    ],
)
def test_encoded_spellings_never_take_the_fast_path(text: str) -> None:
    assert Redactor(secret_params=["tt"]).needs_scan(text)
