"""Redis clients whose chain-script calls (gateway/store/redis_chain.py) fail, wait or run a hook.

The chain reader sends its EVALSHA on a connection of the client's pool itself (not through
``client.evalsha``), so the doubles are connections: real ones, whose ``send_packed_command`` and
``read_response`` act on the chain script's calls alone; everything else the client does goes to
Redis as usual.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import Connection

from gateway.store.redis_chain import SCRIPT

CHAIN_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class ScriptHooks:
    """What the chain script's calls on a :func:`hooked_client` do.

    * ``fail``: each call fails as a lost connection would (``failed`` counts them);
    * ``held``: answers reach the reader only once ``release`` is set (``answered`` is set
      when Redis has answered one);
    * ``hook`` (set at any time): runs when Redis has answered a call, before the reader sees
      the answer."""

    def __init__(self, *, fail: bool = False, held: bool = False) -> None:
        self.fail = fail
        self.failed = 0
        self.held = held
        self.hook: Callable[[], None] | None = None
        self.answered = asyncio.Event()
        self.release = asyncio.Event()


def hooked_client(url: str, hooks: ScriptHooks, **options: Any) -> redis.Redis:
    """A client for ``url`` (``redis://``) whose chain-script calls do what ``hooks`` say."""

    class Hooked(Connection):
        _script = False  # the last command sent was the chain script's

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            data = command if isinstance(command, bytes) else b"".join(command)
            self._script = CHAIN_SHA.encode() in data and b"EVALSHA" in data
            if self._script and hooks.fail:
                hooks.failed += 1
                raise redis.ConnectionError("lost the connection")
            await super().send_packed_command(command, check_health)

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            answer = await super().read_response(*args, **kwargs)
            if self._script:
                if hooks.hook is not None:
                    hooks.hook()
                if hooks.held:
                    hooks.answered.set()
                    await hooks.release.wait()
            return answer

    pool = redis.ConnectionPool.from_url(url, connection_class=Hooked, **options)
    return redis.Redis(connection_pool=pool)
