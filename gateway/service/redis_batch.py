"""Concurrent L2 reads of one event-loop tick go to Redis as one MGET.

Requests that arrive together are started together: aiohttp reads them in one pass of the
loop, and their L2 lookups (each in its own single-flight task, see
:class:`~gateway.service.layered.LayeredCache`) reach Redis in the next. Sent one by one, each
read costs redis-py a connection from the pool, a command and a reply; :class:`GetBatcher` asks
for all of them with one MGET (a Redis Cluster: MGET per slot, pipelined, in one go).

The first read of a tick *leads*: it yields once (``sleep(0)``), so that every other read
started in the same pass joins its batch, then asks Redis and hands each follower its value. A
read alone in its tick is a plain GET, one yield later. The leader asks inside its own
:class:`~gateway.service.redis_guard.RedisGuard` call (its timeout, its breaker); followers wait
inside theirs, and an error reaches every one of them as the error of their own read (counted,
treated as a miss). A leader that is cancelled (its timeout) fails its followers with a
:class:`TimeoutError`, never a cancellation they did not ask for; a follower that gives up is
simply not answered. Nothing here outlives the reads: no task, no queue.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster


class GetBatcher:
    """GET for many callers, one round trip per event-loop tick (module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        # The batch a leader is collecting during this tick: (key, its follower's future).
        self._open: list[tuple[str, asyncio.Future[Any]]] | None = None
        self.batches = 0  # MGETs sent (for tests and benchmarks)

    async def get(self, key: str) -> Any:
        """What ``GET key`` answers (None: no such key)."""
        if self._open is not None:
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            waiter.add_done_callback(_retrieve)
            self._open.append((key, waiter))
            return await waiter
        followers: list[tuple[str, asyncio.Future[Any]]] = []
        self._open = followers
        try:
            try:
                await asyncio.sleep(0)  # every read started in this pass of the loop joins
            finally:
                if self._open is followers:
                    self._open = None
            if not followers:
                return await self._client.get(key)
            values = await self._mget([key, *(k for k, _ in followers)])
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else TimeoutError("batched read gave up")
            for _, follower in followers:
                if not follower.done():
                    follower.set_exception(failure)
            raise
        for (_, follower), value in zip(followers, values[1:], strict=True):
            if not follower.done():
                follower.set_result(value)
        return values[0]

    async def _mget(self, keys: list[str]) -> list[Any]:
        self.batches += 1
        if self._cluster:
            cluster: Any = self._client  # typed as a Redis by connect_redis (see there)
            values: list[Any] = await cluster.mget_nonatomic(keys)
        else:
            values = await self._client.mget(keys)
        return values


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A follower that gave up never reads its failure: mark it seen (no asyncio warning)."""
    if not future.cancelled():
        future.exception()
