"""What the compiled build (gateway/compiled.py) must not contain: constructs that mypyc (2.4)
compiles into something that behaves differently from the source."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from gateway.compiled import MODULES


def source(module: str) -> tuple[Path, ast.Module]:
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    assert spec.origin is not None, module
    path = Path(spec.origin)
    if path.suffix != ".py":  # the compiled build: its source is next to the extension
        path = path.with_name(module.rsplit(".", 1)[-1] + ".py")
    return path, ast.parse(path.read_text(), str(path))


def awaits_in_finally(tree: ast.Module) -> list[int]:
    """Lines of ``try`` statements whose ``finally`` awaits (await, async with, async for)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar) and any(
            isinstance(inner, ast.Await | ast.AsyncWith | ast.AsyncFor)
            for statement in node.finalbody
            for inner in ast.walk(statement)
        ):
            found.append(node.lineno)
    return found


def exception_names_of_two_classes(tree: ast.Module) -> list[str]:
    """``function: name`` for each name that one function's ``except ... as name`` clauses bind
    to exceptions of different classes (as spelled)."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        classes: dict[str, set[str]] = {}
        for node in _own_nodes(function):
            if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                classes.setdefault(node.name, set()).add(ast.unparse(node.type))
        found += [
            f"{function.name}: {name}" for name, spelled in classes.items() if len(spelled) > 1
        ]
    return found


def _own_nodes(function: ast.AST) -> list[ast.AST]:
    """The nodes of ``function``'s body, not those of functions or classes defined in it."""
    nodes: list[ast.AST] = []
    pending = list(ast.iter_child_nodes(function))
    while pending:
        node = pending.pop()
        nodes.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))
    return nodes


@pytest.mark.parametrize("module", MODULES)
def test_no_compiled_function_binds_one_name_to_exceptions_of_two_classes(module: str) -> None:
    """Compiled, a local variable has one type, the first one's: ``except A as exc`` and later
    ``except Exception as exc`` in one function make the second clause raise a TypeError for
    anything that is not an ``A`` (a callback's Redis timeout became a 500, not a 503)."""
    path, tree = source(module)
    assert exception_names_of_two_classes(tree) == [], path


def test_the_check_finds_a_name_bound_to_two_classes() -> None:
    tree = ast.parse(
        "def f():\n"
        "    try:\n"
        "        g()\n"
        "    except KeyError as exc:\n"
        "        h(exc)\n"
        "    try:\n"
        "        g()\n"
        "    except Exception as exc:\n"
        "        h(exc)\n"
        "    def inner():\n"
        "        try:\n"
        "            g()\n"
        "        except OSError as exc:\n"
        "            h(exc)\n"
        "def k():\n"
        "    try:\n"
        "        g()\n"
        "    except (KeyError, OSError) as exc:\n"
        "        h(exc)\n"
        "    try:\n"
        "        g()\n"
        "    except (KeyError, OSError) as exc:\n"
        "        h(exc)\n"
    )
    assert exception_names_of_two_classes(tree) == ["f: exc"]


@pytest.mark.parametrize("module", MODULES)
def test_no_compiled_module_awaits_inside_finally(module: str) -> None:
    """Compiled, an await inside ``finally`` makes a later, successful call of the function
    raise the exception an earlier call raised through it (mypyc/mypyc#1114): this is how a
    working Redis invalidation once failed with the ConnectionError of a Redis from an earlier
    test."""
    path, tree = source(module)
    assert awaits_in_finally(tree) == [], f"{path}: await inside finally"


def test_the_check_finds_an_await_inside_finally() -> None:
    tree = ast.parse(
        "async def f():\n"
        "    try:\n"
        "        await g()\n"
        "    finally:\n"
        "        if x:\n"
        "            await h()\n"
        "async def k():\n"
        "    try:\n"
        "        await g()\n"
        "    finally:\n"
        "        h()\n"
    )
    assert awaits_in_finally(tree) == [2]
