"""gateway/http is the framework-neutral layer: no module in it may import a web framework."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

FRAMEWORKS = ("aiohttp", "starlette", "fastapi", "django", "flask", "werkzeug", "yarl")


def test_gateway_http_imports_no_web_framework() -> None:
    modules = sorted((REPO_ROOT / "gateway" / "http").glob("*.py"))
    assert modules, "gateway/http has no modules"
    for module in modules:
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FRAMEWORKS, f"{module.name} imports {name}"
