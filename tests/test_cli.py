"""The command line: check-config output, and start-up failures without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import REPO_ROOT


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAYWALL_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def test_check_config_prints_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[platform]\napi_token = "file-secret"\n[access]\nmax_ttl = 90\n')
    result = run_cli(
        "check-config",
        "--config",
        str(config),
        env={
            "PAYWALL_PLATFORM__API_TOKEN": "env-secret-token",
            "PAYWALL_CALLBACKS__SECRET": "env-callback-secret-0123",
        },
    )
    assert result.returncode == 0, result.stderr
    for value in ("file-secret", "env-secret-token", "env-callback-secret"):
        assert value not in result.stdout
    effective = json.loads(result.stdout)
    assert effective["platform"]["api_token"] == "**********"
    assert effective["callbacks"]["secret"] == "**********"
    assert effective["access"]["max_ttl"] == 90


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("[access]\ntime_zone = 'Mars/Olympus'\n", "access.time_zone", id="bad-zone"),
        pytest.param("[access\n", "not valid TOML", id="unparsable"),
        pytest.param("[platform]\ntoken = 'x'\n", "platform.token: unknown key", id="unknown"),
    ],
)
def test_bad_config_exits_2_without_traceback(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "g.toml"
    config.write_text(text)
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
