"""The access service and the cache tiers stay apart (DESIGN.md, "Where the code lives"): data
flows access -> store, never back; the access service imports neither a web framework nor
Redis at run time (gateway/access/build.py names the Redis client's type for the checker only);
the store knows nothing of access decisions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def runtime_imports(module: Path) -> list[str]:
    """Every module ``module`` imports when it runs (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    checking_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            checking_only.update(id(inner) for inner in ast.walk(node))
    names = []
    for node in ast.walk(tree):
        if id(node) in checking_only:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def modules_of(package: str) -> list[Path]:
    modules = sorted((REPO_ROOT / "gateway" / package).glob("*.py"))
    assert modules, f"gateway/{package} has no modules"
    return modules


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("access", ("aiohttp", "redis", "starlette", "flask", "gateway.web", "gateway.http")),
        ("store", ("aiohttp", "gateway.access", "gateway.web", "gateway.http", "gateway.platform")),
    ],
)
def test_imports_flow_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    for module in modules_of(package):
        for name in runtime_imports(module):
            assert not any(name == f or name.startswith(f + ".") for f in forbidden), (
                f"gateway/{package}/{module.name} imports {name}"
            )


def test_the_check_sees_type_checking_imports_as_such() -> None:
    # build.py imports redis under TYPE_CHECKING only; the same import outside it would count.
    names = runtime_imports(REPO_ROOT / "gateway" / "access" / "build.py")
    assert "redis.asyncio" not in names
    assert "gateway.store.redis_cache" in names
