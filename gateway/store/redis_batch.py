"""Concurrent Redis reads of one event-loop tick go to Redis as one command.

Requests that arrive together are started together: aiohttp reads them in one pass of the
loop, and their L2 lookups (each in its own single-flight task, see
:class:`~gateway.store.layered.LayeredCache`) reach Redis in the next. Sent one by one, each
read costs redis-py a connection from the pool, a command and a reply; a :class:`TickBatch`
sends all of them as one. :class:`GetBatcher` is the batch of plain GETs: one MGET (a Redis
Cluster: MGET per slot, pipelined, in one go). (The chained session-and-access reads of
:mod:`~gateway.store.redis_chain` are batched per tick too, as one EVALSHA, by their reader,
whose lookups may also be handed to callbacks: its batch runs as a task of its own.)

The first read of a tick *leads*: it yields once (``sleep(0)``), so that every other read
started in the same pass joins its batch, then asks Redis and hands each follower its answer.
A read alone in its tick is asked on its own (for GETs a plain GET), one yield later. The
leader asks inside its own :class:`~gateway.store.redis_guard.RedisGuard` call (its timeout,
its breaker); followers wait inside theirs, and an error reaches every one of them as the
error of their own read (counted, treated as a miss). A leader that is cancelled (its timeout)
fails its followers with a :class:`TimeoutError`, never a cancellation they did not ask for; a
follower that gives up is simply not answered. Nothing here outlives the reads: no task, no
queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

Q = TypeVar("Q")
A = TypeVar("A")


class TickBatch(Generic[Q, A]):
    """Answers the queries of one event-loop tick with one call (module docstring).

    ``many(queries)`` answers a batch, in order; ``one(query)`` a query alone in its tick
    (default: ``many`` of one)."""

    def __init__(
        self,
        many: Callable[[list[Q]], Awaitable[list[A]]],
        one: Callable[[Q], Awaitable[A]] | None = None,
    ) -> None:
        self._many = many
        self._one = one
        # The batch a leader is collecting during this tick: (query, its follower's future).
        self._open: list[tuple[Q, asyncio.Future[A]]] | None = None
        self.batches = 0  # calls of ``many`` (for tests and benchmarks)

    async def run(self, query: Q) -> A:
        if self._open is not None:
            waiter: asyncio.Future[A] = asyncio.get_running_loop().create_future()
            waiter.add_done_callback(_retrieve)
            self._open.append((query, waiter))
            return await waiter
        followers: list[tuple[Q, asyncio.Future[A]]] = []
        self._open = followers
        try:
            try:
                await asyncio.sleep(0)  # every read started in this pass of the loop joins
            finally:
                if self._open is followers:
                    self._open = None
            if not followers and self._one is not None:
                return await self._one(query)
            self.batches += 1
            answers = await self._many([query, *(q for q, _ in followers)])
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else TimeoutError("batched read gave up")
            for _, follower in followers:
                if not follower.done():
                    follower.set_exception(failure)
            raise
        for (_, follower), answer in zip(followers, answers[1:], strict=True):
            if not follower.done():
                follower.set_result(answer)
        return answers[0]


class GetBatcher:
    """GET for many callers, one round trip per event-loop tick (module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._batch: TickBatch[str, Any] = TickBatch(self._mget, self._get)

    @property
    def batches(self) -> int:
        """MGETs sent (for tests and benchmarks)."""
        return self._batch.batches

    async def get(self, key: str) -> Any:
        """What ``GET key`` answers (None: no such key)."""
        return await self._batch.run(key)

    async def _get(self, key: str) -> Any:
        return await self._client.get(key)

    async def _mget(self, keys: list[str]) -> list[Any]:
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
