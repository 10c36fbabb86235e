"""Hypothesis throws random, truncated and huge bodies, wrong secrets and wrong content types at
the callback endpoint: never a 5xx, no invalidation without the secret, nothing raw in logs."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.logs import JsonFormatter
from tests.callbacks.conftest import SEED
from tests.conftest import AccessCapture
from tests.web.conftest import StartStack

SECRET = "fuzz-secret-0123456789abcdef"
MAX_BODY = 4096
SEEDS = [json.dumps(e["body"]).encode() for e in SEED["valid"]] + [
    e["raw"].encode() for e in SEED["invalid"]
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=20,
)
callback_like = st.fixed_dictionaries(
    {
        "entityType": st.sampled_from(["CUSTOMER", "SUBSCRIPTION", "ORDER", "X", "", "invoice"]),
        "callbackType": st.sampled_from(["CREATION", "CHANGE", "DELETION", "Y", ""]),
        "entityId": st.one_of(st.text(max_size=20), st.integers(), st.none()),
        "entity": json_values,
    }
).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(
    st.binary(max_size=512),
    callback_like,
    st.sampled_from(SEEDS).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
    st.integers(MAX_BODY - 2, MAX_BODY * 3).map(lambda n: b"[" * n),
    st.sampled_from(SEEDS).map(lambda b: b + b" " * MAX_BODY),
)
secrets = st.one_of(
    st.just(SECRET),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"),
        max_size=40,
    ),
    st.just(SECRET[:-1]),
    st.just(SECRET.upper()),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "APPLICATION/JSON"]
)


async def test_fuzz_never_a_5xx_and_never_an_unauthenticated_invalidation(
    start_stack: StartStack, caplog: pytest.LogCaptureFixture, access_capture: AccessCapture
) -> None:
    stack = await start_stack(callbacks={"secret": SECRET, "max_body": MAX_BODY})
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()

    async def one(body: bytes, secret: str, in_header: bool, content_type: str) -> int:
        before = stack.metrics.value("paywall_invalidations_total", {"source": "callback"})
        headers = {"Content-Type": content_type} if content_type else {}
        path = "/_paywall/callbacks"
        if in_header:
            headers["X-Paywall-Callback-Secret"] = secret
        else:
            path += "/" + secret
        async with stack.http.post(stack.url(path), data=body, headers=headers) as response:
            await response.read()
            status = response.status
        after = stack.metrics.value("paywall_invalidations_total", {"source": "callback"})
        if secret != SECRET or status >= 300:
            assert after == before, (status, secret)
        return status

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(bodies, secrets, st.booleans(), content_types)
    def case(body: bytes, secret: str, in_header: bool, content_type: str) -> None:
        status = asyncio.run_coroutine_threadsafe(
            one(body, secret, in_header, content_type), loop
        ).result(10)
        assert status < 500, status
        if secret != SECRET:
            assert status in (400, 404), status  # 400: a path the normaliser refuses

    await asyncio.to_thread(case)
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    logged += "\n" + access_capture.text()  # the access log's lines, as written
    assert SECRET not in logged
    # The raw messages too, of every logger but the test server's own aiohttp access log (the
    # gateway runs with access_log=None and silences aiohttp.access: gateway.server, logs).
    raw = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    raw += repr(access_capture.log.raw)  # what the gateway handed to the access log
    assert SECRET not in raw
    assert "plenigo+callback@plenigo.com" not in raw  # no body in any log line
    assert '"path":"/_paywall/callbacks/[redacted]"' in logged


def test_the_fuzz_reaches_the_interesting_answers() -> None:
    # A guard on the strategies themselves: the seeds parse, and a huge body is over the limit.
    assert len(SEEDS) == 6
    assert any(len(b) > MAX_BODY for b in [b"[" * (MAX_BODY * 3)])
