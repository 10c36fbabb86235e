"""The build's one optional step (everything else is in pyproject.toml): with
``GATEWAY_MYPYC=1`` the modules named in gateway/compiled.py are compiled by mypyc into C
extensions; without it the build is pure Python.

The compiled build needs mypy (a development dependency) and a C compiler at build time, so it
is built without build isolation: ``make compiled`` (a compiled copy of the tree for tests and
the benchmark), or a wheel: ``GATEWAY_MYPYC=1 pip wheel --no-build-isolation --no-deps .``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _modules() -> list[str]:
    """gateway/compiled.py's MODULES, read without importing the package."""
    tree = ast.parse((HERE / "gateway" / "compiled.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "MODULES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("gateway/compiled.py has no MODULES")


def _extensions() -> list[object]:
    if os.environ.get("GATEWAY_MYPYC") != "1":
        return []
    from mypyc.build import mypycify

    paths = [str(Path(*name.split(".")).with_suffix(".py")) for name in _modules()]
    return list(mypycify(paths, opt_level="3"))


setup(ext_modules=_extensions())
