"""The package data in ``gateway/resources/``: found through the package, used as the defaults.

That a wheel install really ships them is tests/test_wheel_install.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway import resources
from gateway.demo import __main__ as demo_launcher
from gateway.demo import site
from gateway.sandbox import cli as sandbox_cli
from gateway.sandbox.data import load_data
from tests.conftest import REPO_ROOT

# The files' former places in the repository, which nothing may point at any more.
OLD_PATHS = ("config/" + "paywall.html", "config/" + "sandbox-data.json")


def test_paywall_template_is_package_data() -> None:
    path = resources.paywall_template_path()
    assert path == REPO_ROOT / "gateway" / "resources" / "paywall.html"
    text = resources.default_paywall_template()
    assert text == path.read_text(encoding="utf-8")
    assert "$title" in text
    assert "$login_link" in text


def test_sandbox_seed_is_package_data_and_the_default_everywhere() -> None:
    seed = resources.sandbox_seed()
    assert seed == REPO_ROOT / "gateway" / "resources" / "sandbox-data.json"
    assert "100001" in load_data(seed, datetime.now(UTC)).customers
    defaults = [sandbox_cli.DEFAULT_DATA, site.DEFAULT_DATA, demo_launcher.SEED_DATA]
    assert defaults == [seed] * 3


def test_nothing_points_at_the_old_config_paths() -> None:
    checked = [REPO_ROOT / "Makefile", REPO_ROOT / "README.md", REPO_ROOT / "pyproject.toml"]
    for directory in ("gateway", "tests", "bench", "deploy", "config", "scripts", ".ci"):
        checked += [p for p in (REPO_ROOT / directory).rglob("*") if p.is_file()]
    offenders = []
    for path in checked:
        if "__pycache__" in path.parts or path.suffix in {".pyc", ".whl"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(REPO_ROOT)}: {old}" for old in OLD_PATHS if old in text]
    assert offenders == []
