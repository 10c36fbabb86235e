"""Dataclasses with a written-out ``__init__`` (``init=False``: the compiled build compiles it,
where the generated one stays interpreted; gateway.access.outcome, and for frozen ones
gateway.core.payload) take exactly their fields, in order, with the fields' defaults, and set
each one. A field added to such a class but not to its ``__init__`` fails here instead of
leaving the attribute unset. Read from the source, so both builds check the same thing (a
compiled class's ``__init__`` has no signature to read)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway

ROOT = Path(gateway.__file__).parent


def _init_false(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "dataclass":
            for keyword in decorator.keywords:
                if keyword.arg == "init" and isinstance(keyword.value, ast.Constant):
                    return keyword.value.value is False
    return False


def written_out() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and _init_false(node):
                found.append((f"{path.relative_to(ROOT)}:{node.name}", node))
    return found


CLASSES = written_out()


def _field_default(value: ast.expr | None) -> str | None:
    """The default ``__init__`` must give a field declared with ``value``, as source; None
    for a field without one. A ``field(default_factory=...)`` is made in ``__init__`` from a
    None default; ``field(default=X)`` is X."""
    if value is None:
        return None
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        for keyword in value.keywords:
            if keyword.arg == "default":
                return ast.unparse(keyword.value)
            if keyword.arg == "default_factory":
                return "None"
        return None
    return ast.unparse(value)


def test_the_request_path_values_are_found() -> None:
    names = {name.rsplit(":", 1)[1] for name, _ in CLASSES}
    assert {"AccessOutcome", "RequestView", "Record", "Reply", "SessionPeek"} <= names
    assert {"AccessItem", "AccessPayload", "Decision"} <= names  # frozen ones too


@pytest.mark.parametrize(("name", "node"), CLASSES, ids=[name for name, _ in CLASSES])
def test_init_takes_and_sets_every_field(name: str, node: ast.ClassDef) -> None:
    fields = [
        (statement.target.id, _field_default(statement.value))
        for statement in node.body
        if isinstance(statement, ast.AnnAssign)
        and isinstance(statement.target, ast.Name)
        and "ClassVar" not in ast.unparse(statement.annotation)
    ]
    inits = [
        statement
        for statement in node.body
        if isinstance(statement, ast.FunctionDef) and statement.name == "__init__"
    ]
    assert len(inits) == 1, f"{name}: no written-out __init__"
    arguments = inits[0].args
    params = [argument.arg for argument in arguments.args[1:]]
    defaults: list[str | None] = [None] * (len(params) - len(arguments.defaults))
    defaults += [ast.unparse(default) for default in arguments.defaults]
    assert list(zip(params, defaults, strict=True)) == fields, name
    assigned = {
        target.attr
        for statement in ast.walk(inits[0])
        if isinstance(statement, ast.Assign)
        for target in statement.targets
        if isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "self"
    }
    # A frozen class sets its fields as the generated __init__ does: object.__setattr__(self,
    # "name", value), spelt out (a compiled build turns only that spelling into a plain store).
    assigned |= {
        call.args[1].value
        for call in ast.walk(inits[0])
        if isinstance(call, ast.Call)
        and ast.unparse(call.func) == "object.__setattr__"
        and len(call.args) == 3
        and ast.unparse(call.args[0]) == "self"
        and isinstance(call.args[1], ast.Constant)
    }
    assert assigned == {field for field, _ in fields}, name
