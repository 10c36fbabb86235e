"""Fixtures for the simulator: the seed file loaded at a fixed instant, a settable clock."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox.app import SandboxOptions, create_app
from gateway.sandbox.data import load_data
from gateway.sandbox.model import SandboxData
from tests.conftest import REPO_ROOT

SEED_FILE = REPO_ROOT / "gateway" / "resources" / "sandbox-data.json"

# Wednesday 2025-06-11, 12:00 in Berlin (CEST, UTC+2): inside 06-18, outside 22-04.
FIXED_NOW = datetime(2025, 6, 11, 10, 0, tzinfo=UTC)

API = "/api/v3.0"

ClientFactory = Callable[..., Awaitable[TestClient]]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(FIXED_NOW)


@pytest.fixture(scope="session")
def seed_data() -> SandboxData:
    # Apps deep-copy their data, so one load serves every test.
    return load_data(SEED_FILE, FIXED_NOW)


@pytest.fixture
def make_client(
    aiohttp_client: ClientFactory, seed_data: SandboxData, clock: FakeClock
) -> ClientFactory:
    """``await make_client(options=..., rng=..., data=...)`` -> a client of a fresh simulator."""

    async def make(
        options: SandboxOptions | None = None,
        rng: random.Random | None = None,
        data: SandboxData | None = None,
    ) -> TestClient:
        app = create_app(data or seed_data, options, clock=clock, rng=rng)
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()
