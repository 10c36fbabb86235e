"""IdentityResolver with a scripted provider: caching, negative caching, hashing, failures."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest

from gateway.access.identity import Identity, IdentityResolver
from gateway.access.outcome import Credentials
from gateway.errors import (
    InvalidSession,
    InvalidTransferToken,
    PlatformUnavailable,
    RateLimited,
)
from gateway.metrics import Metrics
from gateway.store.memory import MemoryCache
from tests.service.conftest import ManualClock

SESSIONS = {"good-session": "100001", "other-session": "100002"}
TRANSFERS = {"good-transfer": "other-session"}


class ScriptedIdentity:
    """Knows SESSIONS and one-time TRANSFERS; can fail, can be slow; counts calls."""

    def __init__(self) -> None:
        self.validations = 0
        self.exchanges = 0
        self.failure: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.transfers = dict(TRANSFERS)

    async def customer_for_session(self, session_token: str) -> str:
        self.validations += 1
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        if session_token not in SESSIONS:
            raise InvalidSession("validate_session: HTTP 401")
        return SESSIONS[session_token]

    async def exchange_transfer_token(self, transfer_token: str) -> str:
        self.exchanges += 1
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        session = self.transfers.pop(transfer_token, None)
        if session is None:
            raise InvalidTransferToken("transfer_token: HTTP 404")
        return session


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.provider = ScriptedIdentity()
        self.cache: MemoryCache[str | None] = MemoryCache(1000, self.clock)
        self.metrics = Metrics()
        self.resolver = IdentityResolver(
            self.provider,
            self.cache,
            self.clock,
            self.metrics,
            session_ttl=timedelta(seconds=300),
            invalid_session_ttl=timedelta(seconds=30),
            stale_if_error=timedelta(seconds=300),
        )

    async def session(self, token: str) -> Identity | None:
        return await self.resolver.resolve(Credentials(session_token=token))

    def lookups(self, result: str) -> float:
        labels = {"cache": "session", "tier": "l1", "result": result}
        return self.metrics.value("paywall_cache_lookups_total", labels)


@pytest.fixture
def harness() -> Harness:
    return Harness()


async def test_valid_session_is_cached_for_session_ttl(harness: Harness) -> None:
    assert await harness.session("good-session") == Identity("100001")
    harness.clock.advance(299)
    assert await harness.session("good-session") == Identity("100001")
    assert harness.provider.validations == 1
    harness.clock.advance(1)
    assert await harness.session("good-session") == Identity("100001")
    assert harness.provider.validations == 2
    assert (harness.lookups("hit"), harness.lookups("miss")) == (1, 2)


async def test_invalid_session_is_negative_cached(harness: Harness) -> None:
    for _ in range(100):
        assert await harness.session("random-7f3a") is None
    assert harness.provider.validations == 1
    harness.clock.advance(30)
    assert await harness.session("random-7f3a") is None
    assert harness.provider.validations == 2


async def test_cache_is_keyed_by_a_hash_of_the_token(harness: Harness) -> None:
    await harness.session("good-session")
    await harness.session("random-7f3a")
    keys = list(harness.cache._entries)
    assert len(keys) == 2
    assert all(key.startswith("session:") and len(key) == len("session:") + 64 for key in keys)
    assert not any("good-session" in key or "random-7f3a" in key for key in keys)


async def test_every_lookup_is_made_under_its_own_tokens_key(harness: Harness) -> None:
    # The resolver remembers the last token's key (a request that misses L1 looks its session
    # up more than once): whatever came before, each token is looked up under its own key.
    good, other = "good-session", "".join(["other-", "session"])  # a str made at run time
    for token, customer in ((good, "100001"), (other, "100002"), (good, "100001")):
        assert await harness.session(token) == Identity(customer)
        assert await harness.session(token) == Identity(customer)
    assert harness.provider.validations == 2
    twin = "".join(["good-", "session"])  # equal to ``good``, another object
    assert twin == good
    assert twin is not good
    for credentials, customer in (
        (Credentials(session_token=other), "100002"),
        (Credentials(session_token=twin), "100001"),
        (Credentials(session_token=good), "100001"),
        (Credentials(session_token="random-7f3a"), None),
    ):
        peeked = harness.resolver.peek(credentials)
        assert peeked is None if customer is None else peeked.identity == Identity(customer)
    assert await harness.session("random-7f3a") is None
    assert await harness.session(other) == Identity("100002")
    assert sorted(harness.cache._entries) == sorted(
        f"session:{_hash(token)}" for token in (good, other, "random-7f3a")
    )


async def test_concurrent_validations_share_one_call(harness: Harness) -> None:
    harness.provider.gate.clear()
    waiters = [asyncio.ensure_future(harness.session("good-session")) for _ in range(10)]
    await asyncio.sleep(0)
    harness.provider.gate.set()
    assert await asyncio.gather(*waiters) == [Identity("100001")] * 10
    assert harness.provider.validations == 1
    assert harness.metrics.value("paywall_coalesced_total") == 9


async def test_cancelled_request_does_not_cancel_the_validation(harness: Harness) -> None:
    harness.provider.gate.clear()
    first = asyncio.ensure_future(harness.session("good-session"))
    second = asyncio.ensure_future(harness.session("good-session"))
    await asyncio.sleep(0)
    first.cancel()
    harness.provider.gate.set()
    assert await second == Identity("100001")
    with pytest.raises(asyncio.CancelledError):
        await first


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(PlatformUnavailable("validate_session: HTTP 503"), id="unavailable"),
        pytest.param(RateLimited("validate_session: HTTP 429", 5.0), id="rate-limited"),
    ],
)
async def test_platform_failure_raises_without_a_usable_entry(
    harness: Harness, failure: Exception
) -> None:
    harness.provider.failure = failure
    with pytest.raises(PlatformUnavailable):
        await harness.session("good-session")


async def test_expired_session_entry_serves_stale_while_the_platform_fails(
    harness: Harness,
) -> None:
    await harness.session("good-session")
    harness.clock.advance(400)
    harness.provider.failure = PlatformUnavailable("down")
    assert await harness.session("good-session") == Identity("100001", stale=True)
    assert harness.lookups("stale") == 1
    harness.clock.advance(200)  # past session_ttl + stale_if_error
    with pytest.raises(PlatformUnavailable):
        await harness.session("good-session")


async def test_negative_entries_are_never_served_stale(harness: Harness) -> None:
    await harness.session("random-7f3a")
    harness.clock.advance(31)
    harness.provider.failure = PlatformUnavailable("down")
    with pytest.raises(PlatformUnavailable):
        await harness.session("random-7f3a")


async def test_transfer_token_is_exchanged_once_and_never_cached(harness: Harness) -> None:
    credentials = Credentials(transfer_token="good-transfer")
    harness.provider.gate.clear()
    waiters = [asyncio.ensure_future(harness.resolver.resolve(credentials)) for _ in range(3)]
    await asyncio.sleep(0)
    harness.provider.gate.set()
    results = await asyncio.gather(*waiters)
    assert results == [Identity("100002", session_token="other-session")] * 3
    assert harness.provider.exchanges == 1
    # One-time: a later request with the same token asks again, and is refused.
    assert await harness.resolver.resolve(credentials) is None
    assert harness.provider.exchanges == 2


async def test_transfer_token_wins_over_the_session(harness: Harness) -> None:
    identity = await harness.resolver.resolve(
        Credentials(transfer_token="good-transfer", session_token="good-session")
    )
    assert identity == Identity("100002", session_token="other-session")


async def test_invalid_transfer_token_falls_back_to_the_session(harness: Harness) -> None:
    identity = await harness.resolver.resolve(
        Credentials(transfer_token="burnt", session_token="good-session")
    )
    assert identity == Identity("100001")


async def test_exchange_failure_raises(harness: Harness) -> None:
    harness.provider.failure = PlatformUnavailable("down")
    with pytest.raises(PlatformUnavailable):
        await harness.resolver.resolve(Credentials(transfer_token="good-transfer"))


async def test_no_credentials(harness: Harness) -> None:
    assert await harness.resolver.resolve(Credentials()) is None
    assert harness.provider.validations == 0


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_invalidate_session_forgets_only_that_session() -> None:
    h = Harness()
    assert await h.session("good-session") == Identity("100001")
    assert await h.session("other-session") == Identity("100002")
    await h.resolver.invalidate_session(_hash("good-session").upper())  # hex in either case
    assert await h.session("good-session") == Identity("100001")
    assert await h.session("other-session") == Identity("100002")
    assert h.provider.validations == 3


async def test_a_validation_in_flight_when_the_session_is_invalidated_is_not_kept() -> None:
    h = Harness()
    h.provider.gate.clear()
    first = asyncio.create_task(h.session("good-session"))
    await asyncio.sleep(0)
    await h.resolver.invalidate_session(_hash("good-session"))  # a logout, mid-validation
    h.provider.gate.set()
    assert await first == Identity("100001")  # asked before the logout: answered as it was
    assert await h.session("good-session") == Identity("100001")
    assert h.provider.validations == 2  # ...but not remembered past it


async def test_invalidate_all_forgets_every_session() -> None:
    h = Harness()
    await h.session("good-session")
    await h.session("no-such-session")
    await h.resolver.invalidate_all()
    await h.session("good-session")
    await h.session("no-such-session")
    assert h.provider.validations == 4


@pytest.mark.parametrize("name", ["", "abc", "g" * 64, _hash("x") + "0", " " + _hash("x")[1:]])
async def test_invalidate_session_wants_a_sha256(name: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        await Harness().resolver.invalidate_session(name)
