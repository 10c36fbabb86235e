"""JSON read one way only: an object that names a key twice has no single meaning (Python's
json and pydantic keep the last value, other parsers the first), so it is refused, like the
non-JSON constants ``NaN`` and ``Infinity``. Used for every JSON body the gateway reads from
outside: platform answers, platform callbacks, the admin listener."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JsonConstant", "RepeatedKey", "loads"]


class RepeatedKey(ValueError):
    """A JSON object named one key twice (keys compared decoded: ``"a"`` is ``"\\u0061"``)."""


class JsonConstant(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``: accepted by Python's json, not JSON."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise RepeatedKey("a key appears twice in a JSON object")
    return result


def _no_constant(name: str) -> Any:
    raise JsonConstant(f"{name} is not JSON")


def loads(data: str | bytes) -> Any:
    """``data`` decoded. RepeatedKey for a key named twice in one object; JsonConstant for
    NaN / Infinity; ValueError (with json.JSONDecodeError and UnicodeDecodeError among them)
    for anything else that is not JSON;
    RecursionError for nesting deeper than the interpreter allows."""
    return json.loads(data, object_pairs_hook=_unique, parse_constant=_no_constant)
