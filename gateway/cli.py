"""The ``paywall-gateway`` command: sub-commands wire configuration to the components.

Start-up problems (bad configuration, unreadable data) end with exit code 2 and a message
on stderr that names the problem — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import load_settings
from gateway.errors import ConfigError

EXIT_USAGE = 2


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    # Secrets (SecretStr) render as "**********" in JSON mode; an unset secret stays empty.
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from gateway.sandbox import cli as sandbox_cli

    return sandbox_cli.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paywall-gateway",
        description="Access-check gateway for content sold through the plenigo platform.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check-config", help="validate a configuration file and print the effective settings"
    )
    check.add_argument(
        "--config", type=Path, default=None, help="TOML configuration file (default: built-in)"
    )
    check.set_defaults(handler=_check_config)

    from gateway.sandbox import cli as sandbox_cli

    sandbox = commands.add_parser(
        "sandbox", help="run the local platform API simulator (for demos and tests)"
    )
    sandbox_cli.configure_parser(sandbox)
    sandbox.set_defaults(handler=_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except ConfigError as exc:
        print(f"paywall-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return result
