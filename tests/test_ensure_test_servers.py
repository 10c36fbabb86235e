"""``scripts/ensure-test-servers``, the first step of ``make test``: its decisions, without root.

Each case runs the script with a PATH that holds only a temporary directory of stand-ins: the
programs it checks for (present or not), a fake ``id`` (root or not), a fake ``sudo`` (allowed
or refused) and a fake ``apt-get`` that records its arguments and "installs" by creating the
missing programs. ``ENSURE_EXTRA_PATH=""`` keeps the real /usr/sbin out of the search.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "ensure-test-servers"
TIMEOUT = 30.0
SERVERS = {  # Debian package -> the program the script looks for
    "make": "make",
    "redis-server": "redis-server",
    "redis-tools": "redis-cli",
    "nginx-light": "nginx",
    "openssl": "openssl",
    "gcc": "gcc",
}
SERVER_PACKAGES = "redis-server redis-tools nginx-light openssl gcc"

FAKE_APT_GET = """#!/bin/sh
echo "apt-get DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "$FAKE_DIR/calls"
[ "$1" = install ] || exit 0
[ -f "$FAKE_DIR/apt-installs-nothing" ] && exit 0
for arg in "$@"; do
  case "$arg" in
    redis-tools) program=redis-cli ;;
    nginx-light) program=nginx ;;
    python3-venv) : > "$FAKE_DIR/venv-ok"; continue ;;
    python3-dev) : > "$FAKE_DIR/headers-ok"; continue ;;
    -*|install) continue ;;
    *) program="$arg" ;;
  esac
  printf '#!/bin/sh\\nexit 0\\n' > "$FAKE_DIR/bin/$program"
  /bin/chmod +x "$FAKE_DIR/bin/$program"
done
"""
FAKE_SUDO = """#!/bin/sh
echo "sudo $*" >> "$FAKE_DIR/calls"
if [ "$1" != -n ] || [ ! -f "$FAKE_DIR/sudo-allowed" ]; then
  echo "sudo: a password is required" >&2
  exit 1
fi
shift
exec "$@"
"""
FAKE_PYTHON = """#!/bin/sh
case "$2" in
  *Python.h*) [ -f "$FAKE_DIR/headers-ok" ] ;;
  *) [ -f "$FAKE_DIR/venv-ok" ] ;;
esac
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


@dataclass
class Machine:
    """A pretend machine in a temporary directory."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def has(self, *programs: str) -> None:
        for program in programs:
            _executable(self.bin / program, "#!/bin/sh\nexit 0\n")

    def user(self, uid: int) -> None:
        _executable(self.bin / "id", f"#!/bin/sh\necho {uid}\n")

    def apt(self, *, installs: bool = True) -> None:
        _executable(self.bin / "apt-get", FAKE_APT_GET)
        if not installs:
            (self.root / "apt-installs-nothing").touch()

    def sudo(self, *, allowed: bool) -> None:
        _executable(self.bin / "sudo", FAKE_SUDO)
        if allowed:
            (self.root / "sudo-allowed").touch()

    def venv(self, ok: bool) -> None:
        if ok:
            (self.root / "venv-ok").touch()

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def run(self, python: str | None = None, *arguments: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "ENSURE_EXTRA_PATH": "",
            "PYTHON": python or str(self.root / "python"),
            "FAKE_DIR": str(self.root),
            "HOME": str(self.root),
        }
        return subprocess.run(
            ["/bin/bash", str(SCRIPT), *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path)
    m.bin.mkdir()
    # what the script runs besides the programs it checks: `env DEBIAN_FRONTEND=… apt-get`,
    # `sudo -n true`
    for tool in ("env", "true"):
        os.symlink(f"/usr/bin/{tool}", m.bin / tool)
    _executable(tmp_path / "python", FAKE_PYTHON)
    (tmp_path / "headers-ok").touch()  # Python.h is there unless a test takes it away
    m.has("make")
    return m


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)


def test_nothing_missing_does_nothing(machine: Machine) -> None:
    machine.has(*SERVERS.values())
    machine.user(1000)
    machine.apt()
    machine.sudo(allowed=True)
    result = machine.run(python=sys.executable)  # the real venv/ensurepip check
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert machine.calls() == []  # not even apt-get update


def test_no_root_no_sudo_prints_the_command_and_stops(machine: Machine) -> None:
    machine.user(1000)
    machine.apt()
    machine.sudo(allowed=False)
    machine.venv(ok=True)
    result = machine.run()
    assert result.returncode == 1
    command = (
        f"  sudo apt-get update && sudo apt-get install -y --no-install-recommends "
        f"{SERVER_PACKAGES}\n"
    )
    assert command in result.stderr
    assert "redis-server, redis-cli, nginx, openssl" in result.stderr
    assert machine.calls() == ["sudo -n true"]  # asked, refused, nothing installed


def test_no_root_and_no_sudo_at_all_prints_a_su_command(machine: Machine) -> None:
    machine.has("redis-server", "redis-cli", "openssl")
    machine.user(1000)
    machine.apt()
    machine.venv(ok=True)
    result = machine.run()
    assert result.returncode == 1
    assert (
        "  su -c 'apt-get update && apt-get install -y --no-install-recommends nginx-light gcc'\n"
        in result.stderr
    )
    assert machine.calls() == []


def test_root_installs_what_is_missing_with_apt(machine: Machine) -> None:
    machine.has("redis-server", "openssl")
    machine.user(0)
    machine.apt()
    machine.venv(ok=False)
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert machine.calls() == [
        "apt-get DEBIAN_FRONTEND=noninteractive update -qq",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq --no-install-recommends "
        "redis-tools nginx-light gcc python3-venv",
    ]
    assert "installing redis-tools nginx-light gcc python3-venv" in result.stderr


def test_sudo_without_password_installs_through_sudo(machine: Machine) -> None:
    machine.user(1000)
    machine.apt()
    machine.sudo(allowed=True)
    machine.venv(ok=True)
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert machine.calls() == [
        "sudo -n true",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "apt-get DEBIAN_FRONTEND=noninteractive update -qq",
        f"sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        f"--no-install-recommends {SERVER_PACKAGES}",
        f"apt-get DEBIAN_FRONTEND=noninteractive install -y -qq --no-install-recommends "
        f"{SERVER_PACKAGES}",
    ]


def test_an_install_that_does_not_help_fails(machine: Machine) -> None:
    machine.has("redis-server", "redis-cli", "openssl")
    machine.user(0)
    machine.apt(installs=False)
    machine.venv(ok=True)
    result = machine.run()
    assert result.returncode == 1
    assert "still missing after apt-get install: nginx" in result.stderr


def test_without_apt_get_it_names_the_packages_and_stops(machine: Machine) -> None:
    machine.has("redis-server", "redis-cli", "nginx")
    machine.user(0)
    machine.venv(ok=True)
    result = machine.run()
    assert result.returncode == 1
    assert "no apt-get here; install the equivalent of: openssl" in result.stderr


def test_make_test_runs_it_first() -> None:
    """``make -n test`` (prints, runs nothing but the recursive make's own -n) starts with it."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "test"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(r"PYTHON='[^']*' scripts/ensure-test-servers", first), result.stdout


def test_bench_checks_its_own_list_as_root_installs_it(machine: Machine) -> None:
    """``scripts/ensure-test-servers bench`` (make bench): wrk, nginx, redis-server, gcc; the test
    list's programs are not asked for."""
    machine.has("nginx")
    machine.user(0)
    machine.apt()
    machine.venv(ok=True)
    result = machine.run(None, "bench")
    assert result.returncode == 0, result.stderr
    assert "make bench: this machine lacks wrk, redis-server, gcc" in result.stderr
    install = [call for call in machine.calls() if " install " in call]
    assert install == [
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq --no-install-recommends "
        "wrk redis-server gcc"
    ]


def test_missing_python_headers_are_installed_with_python3_dev(machine: Machine) -> None:
    """The compiled build (make test-compiled) compiles C against Python.h."""
    machine.has(*SERVERS.values())
    (machine.root / "headers-ok").unlink()
    machine.user(0)
    machine.apt()
    machine.venv(ok=True)
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert "this machine lacks Python.h (Debian packages: python3-dev)" in result.stderr
    install = [call for call in machine.calls() if " install " in call]
    assert install == [
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq --no-install-recommends python3-dev"
    ]


def test_an_unknown_purpose_is_a_usage_error(machine: Machine) -> None:
    result = machine.run(None, "deploy")
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert machine.calls() == []
