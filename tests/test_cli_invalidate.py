"""``paywall-gateway invalidate``: through the shared Redis tier to every running gateway
process; without one it says so and names the admin listener instead; Redis down -> exit 1."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from gateway.cli import main
from tests.conftest import free_port
from tests.web.conftest import API_TOKEN, Stack, StartStack, http, start_stack

__all__ = ["http", "start_stack"]  # the whole-stack fixtures of tests/web

NO_RIGHTS = {"Cookie": "paywall_session=demo-session-no-rights"}
PLAIN = {"Cookie": "paywall_session=demo-session-plain"}
TOKEN = "demo-session-no-rights"
GRANT = {
    "accessRightUniqueId": "premium",
    "lifeTimeStart": "2025-01-01T00:00:00Z",
    "lifeTimeEnd": None,
    "blocked": False,
}


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


async def cli(*args: str) -> int:
    """``main`` on a thread of its own: it runs its own event loop, as from a shell."""
    return await asyncio.to_thread(main, ["invalidate", *args])


async def gateway_on(start_stack: StartStack, redis_url: str) -> Stack:
    client = redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    cache = {"redis_url": redis_url, "redis_timeout": 1.0, "refresh_ahead": 0}
    return await start_stack(cache=cache)


async def grant_premium(stack: Stack, customer: str) -> None:
    url = stack.platform.make_url(f"/api/v3.0/accessRights/{customer}")
    async with stack.http.post(url, json=GRANT, headers={"X-plenigo-token": API_TOKEN}) as r:
        assert r.status == 201, await r.text()


async def until(stack: Stack, headers: dict[str, str], status: int, endpoint: str) -> None:
    """Request until the gateway answers ``status`` having asked ``endpoint`` again: within
    two seconds of the command's return (the bus delivers), or the test fails."""
    before = stack.platform_calls(endpoint)
    for _ in range(40):
        response = await stack.get("/premium/story", headers=headers)
        if response.status == status and stack.platform_calls(endpoint) > before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway did not ask {endpoint} again")


def shared_config(tmp_path: Path, redis_url: str) -> Path:
    return config(tmp_path, f'[cache]\nredis_url = "{redis_url}"\nredis_timeout = 1.0\n')


async def test_customer_a_running_gateway_asks_the_platform_again(
    start_stack: StartStack, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = await gateway_on(start_stack, redis_url)
    assert (await stack.get("/premium/story", headers=NO_RIGHTS)).status == 403
    await grant_premium(stack, "100008")  # "customer says she paid"
    assert (await stack.get("/premium/story", headers=NO_RIGHTS)).status == 403  # cached
    assert stack.platform_calls("has_access") == 1
    sessions = stack.platform_calls("validate_session")

    path = shared_config(tmp_path, redis_url)
    assert await cli("--config", str(path), "--customer", "100008") == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1
    assert "customer 100008" in out
    assert err == ""
    await until(stack, NO_RIGHTS, 200, "has_access")
    assert stack.platform_calls("validate_session") > sessions  # its sessions too
    # Another customer's answers stay cached.
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    plain = stack.platform_calls("has_access")
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    assert stack.platform_calls("has_access") == plain


@pytest.mark.parametrize("by", ["--session", "--session-hash"])
async def test_session_by_token_or_hash_and_the_token_is_never_printed(
    start_stack: StartStack,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    by: str,
) -> None:
    stack = await gateway_on(start_stack, redis_url)
    assert (await stack.get("/premium/story", headers=NO_RIGHTS)).status == 403
    value = TOKEN if by == "--session" else hashlib.sha256(TOKEN.encode()).hexdigest().upper()
    path = shared_config(tmp_path, redis_url)
    assert await cli("--config", str(path), by, value) == 0
    out, err = capsys.readouterr()
    assert "one session" in out
    for text in (TOKEN, hashlib.sha256(TOKEN.encode()).hexdigest()):
        assert text not in out.lower() + err.lower()
    has_access = stack.platform_calls("has_access")
    await until(stack, NO_RIGHTS, 403, "validate_session")
    assert stack.platform_calls("has_access") == has_access  # access answers untouched


async def test_all(
    start_stack: StartStack, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = await gateway_on(start_stack, redis_url)
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    assert await cli("--config", str(shared_config(tmp_path, redis_url)), "--all") == 0
    assert "everything" in capsys.readouterr().out
    await until(stack, PLAIN, 200, "has_access")


@pytest.mark.parametrize(
    ("args", "body"),
    [
        (["--customer", "100001"], '{"customer": "100001"}'),
        (["--session", TOKEN], '{"session": "TOKEN"}'),
        (["--all"], '{"all": true}'),
    ],
)
def test_without_redis_it_names_the_admin_listener_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], body: str
) -> None:
    path = config(tmp_path, '[server]\nadmin_host = "10.0.0.7"\nadmin_port = 9181\n')
    assert main(["invalidate", "--config", str(path), *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "no [cache] redis_url" in err
    assert "nothing was invalidated" in err
    assert (
        "curl -X POST -H 'Content-Type: application/json' "
        f"-d '{body}' http://10.0.0.7:9181/invalidate"
    ) in err
    assert TOKEN not in err


async def test_the_curl_command_it_prints_works(
    start_stack: StartStack, aiohttp_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The admin URL and body it names are the ones the admin listener answers."""
    from gateway.web.admin import create_admin_app

    stack = await start_stack()
    admin = await aiohttp_server(create_admin_app(stack.gateway.app))
    path = config(tmp_path, f"[server]\nadmin_port = {admin.port}\n")
    assert await cli("--config", str(path), "--customer", "100001") == 2
    err = capsys.readouterr().err
    body = err.split("-d '", 1)[1].split("' ", 1)[0]
    url = err.rsplit(" ", 1)[1].strip()
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["invalidated"]["customer"] == "100001"


async def test_redis_down_exits_1_within_a_few_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    path = config(tmp_path, f'[cache]\nredis_url = "{url}"\nredis_timeout = 0.5\n')
    for args in (["--customer", "100001"], ["--session", TOKEN], ["--all"]):
        started = time.monotonic()
        assert await cli("--config", str(path), *args) == 1
        assert time.monotonic() - started < 5
        out, err = capsys.readouterr()
        assert out == ""
        assert "invalidation failed" in err
        assert TOKEN not in err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--customer", "100001", "--all"],
        ["--customer", "12ab"],
        ["--session", "has space"],
        ["--session-hash", "abc"],
    ],
)
def test_usage_errors_exit_2_without_echoing_a_token(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["invalidate", *args])
    assert exit_info.value.code == 2
    assert "has space" not in capsys.readouterr().err
