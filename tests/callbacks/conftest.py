"""The whole-stack fixtures of tests/web, and the seed's callback examples."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import REPO_ROOT
from tests.service.conftest import redis_client
from tests.web.conftest import http, start_stack

__all__ = ["SEED", "http", "redis_client", "start_stack"]

SEED: dict[str, Any] = json.loads(
    (REPO_ROOT / "tests" / "callbacks" / "seed_examples.json").read_text(encoding="utf-8")
)
