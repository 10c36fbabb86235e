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
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError

EXIT_USAGE = 2


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    # Secrets (SecretStr) render as "**********" in JSON mode; an unset secret stays empty.
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def serve_settings(args: argparse.Namespace) -> Settings:
    """The settings ``serve`` runs with: the file (or defaults), then the command-line overrides."""
    settings = load_settings(args.config)
    overrides = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("admin_port", args.admin_port),
        )
        if value is not None
    }
    if not overrides:
        return settings
    return settings.model_copy(update={"server": settings.server.model_copy(update=overrides)})


def _serve(args: argparse.Namespace) -> int:
    from gateway import server

    return server.run(serve_settings(args))


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

    serve = commands.add_parser(
        "serve", help="run the gateway: the main listener and the admin listener"
    )
    serve.add_argument(
        "--config", type=Path, default=None, help="TOML configuration file (default: built-in)"
    )
    serve.add_argument("--host", default=None, help="address to listen on (overrides server.host)")
    serve.add_argument(
        "--port", type=port_number, default=None, help="port to listen on (overrides server.port)"
    )
    serve.add_argument(
        "--admin-port",
        type=port_number,
        default=None,
        help="port of the admin listener (overrides server.admin_port; 0 = any free)",
    )
    serve.set_defaults(handler=_serve)

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
