"""GetBatcher: the L2 reads of one event-loop tick are one MGET, and each read still succeeds,
fails or gives up on its own (gateway/store/redis_batch.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis.asyncio as redis

from gateway.store.redis_batch import GetBatcher
from gateway.store.redis_connect import connect_redis
from gateway.store.redis_generations import Generations
from tests.conftest import free_port
from tests.service.test_redis_connect import cluster_url  # noqa: F401 (a fixture)


async def test_reads_of_one_tick_are_one_mget(redis_client: redis.Redis) -> None:
    await redis_client.mset({"k1": b"1", "k2": b"2", "k3": b"3"})
    batcher = GetBatcher(redis_client)
    values = await asyncio.gather(*(batcher.get(k) for k in ("k1", "k2", "missing", "k3", "k1")))
    assert values == [b"1", b"2", None, b"3", b"1"]
    assert batcher.batches == 1
    # A read alone in its tick is a plain GET.
    assert await batcher.get("k2") == b"2"
    assert batcher.batches == 1
    # Reads of the next tick make the next batch.
    first = await asyncio.gather(batcher.get("k1"), batcher.get("k2"))
    second = await asyncio.gather(batcher.get("k3"), batcher.get("missing"))
    assert (first, second) == ([b"1", b"2"], [b"3", None])
    assert batcher.batches == 3


async def test_a_failure_reaches_every_read_of_the_batch() -> None:
    client = redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    batcher = GetBatcher(client)
    try:
        results = await asyncio.gather(
            *(batcher.get(k) for k in ("a", "b", "c")), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert all(isinstance(r, redis.ConnectionError | OSError) for r in results), results


class Hanging:
    """A client whose MGET never answers."""

    async def mget(self, keys: list[str]) -> list[Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_leader_that_gives_up_fails_its_followers_with_a_timeout() -> None:
    batcher = GetBatcher(cast(redis.Redis, Hanging()))

    async def bounded(key: str, seconds: float) -> Any:
        async with asyncio.timeout(seconds):
            return await batcher.get(key)

    leader = asyncio.create_task(bounded("a", 0.05))
    follower = asyncio.create_task(bounded("b", 5.0))
    with pytest.raises(TimeoutError):
        await leader
    with pytest.raises(TimeoutError):  # the leader's, not a cancellation it did not ask for
        await follower
    assert not follower.cancelled()


async def test_a_follower_that_gives_up_does_not_disturb_the_others(
    redis_client: redis.Redis,
) -> None:
    await redis_client.set("k", b"v")
    batcher = GetBatcher(redis_client)
    tasks = [asyncio.create_task(batcher.get(k)) for k in ("k", "k", "k")]
    await asyncio.sleep(0)  # all three have started: the first leads
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert done[0] == done[2] == b"v"
    assert isinstance(done[1], asyncio.CancelledError)


async def test_on_a_cluster_batches_and_record_reads_cross_slots(cluster_url: str) -> None:  # noqa: F811
    client = connect_redis(cluster_url, connect_timeout=2.0)
    try:
        keys = [f"pwg:v1:access:0:c{i}:premium@0" for i in range(20)]  # over every node
        for i, key in enumerate(keys[::2]):
            await client.set(key, str(i).encode())
        batcher = GetBatcher(client)
        values = await asyncio.gather(*(batcher.get(k) for k in keys))
        assert values == [str(i // 2).encode() if i % 2 == 0 else None for i in range(20)]
        assert batcher.batches == 1
        generations = Generations(client, listening=lambda: True)
        await client.set("pwg:v1:access:gen:c1", 7, px=60_000)
        assert await generations.current("pwg:v1:access:gen:c1") == 7
        assert await generations.current("pwg:v1:access:gen:c2") == 0
        assert len(generations) == 2
    finally:
        await client.aclose()
