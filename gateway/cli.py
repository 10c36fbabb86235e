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
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.web.admin import Target

EXIT_USAGE = 2
EXIT_FAILED = 1


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


def customer_id(text: str) -> str:
    """An argparse type: a platform customer id (1 to 18 digits)."""
    from gateway.platform.models import is_customer_id

    if not is_customer_id(text):
        raise argparse.ArgumentTypeError("a customer id is 1 to 18 digits")
    return text


def sha256_hex(text: str) -> str:
    """An argparse type: the SHA-256 (64 hex digits) of a session token, as logs may show it."""
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError("a session hash is 64 hex digits (SHA-256 of the token)")
    return text.lower()


def session_token(text: str) -> str:
    """An argparse type: a session token (1 to 4096 visible ASCII characters); never echoed."""
    from gateway.core.tokens import visible_token

    if not visible_token(text):
        raise argparse.ArgumentTypeError("a session token is 1 to 4096 visible ASCII characters")
    return text


def _invalidate(args: argparse.Namespace) -> int:
    """Invalidate through the shared Redis tier, so every running gateway process hears of it.

    Without ``[cache] redis_url`` there is nothing shared this command could reach: it says so
    and names the admin listener's ``POST /invalidate`` instead (exit 2), never pretending."""
    import asyncio

    from gateway.web.admin import Target, session_hash

    settings = load_settings(args.config)
    if args.customer is not None:
        target, body = Target("customer", args.customer), {"customer": args.customer}
    elif args.session is not None:
        target, body = Target("session", session_hash(args.session)), {"session": "TOKEN"}
    elif args.session_hash is not None:
        target, body = Target("session", args.session_hash), {"session_hash": args.session_hash}
    else:
        target, body = Target("all"), {"all": True}
    if not settings.cache.redis_url:
        server = settings.server
        host = f"[{server.admin_host}]" if ":" in server.admin_host else server.admin_host
        print(
            "paywall-gateway: no [cache] redis_url is configured, so there is no shared tier "
            "through which to reach the running gateway processes; nothing was invalidated. "
            "Use the admin listener of each process instead: curl -X POST -H "
            f"'Content-Type: application/json' -d '{json.dumps(body)}' "
            f"http://{host}:{server.admin_port}/invalidate",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        asyncio.run(_invalidate_shared(settings, target))
    except Exception as exc:
        print(
            f"paywall-gateway: invalidation failed, Redis did not take it ({type(exc).__name__}); "
            "nothing is confirmed, try again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    what = {
        "customer": f"customer {target.value} (access answers and sessions)",
        "session": "one session",
        "all": "everything",
    }[target.kind]
    print(f"invalidated {what} in Redis and on every gateway process subscribed to it")
    return 0


async def _invalidate_shared(settings: Settings, target: Target) -> None:
    from gateway.access.build import utc_now
    from gateway.metrics import Metrics
    from gateway.runtime import open_runtime

    async with open_runtime(settings, Metrics(), utc_now) as runtime:
        await target.apply(runtime.service, "cli")


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

    invalidate = commands.add_parser(
        "invalidate",
        help="forget cached answers on every gateway process (through the shared Redis tier)",
    )
    invalidate.add_argument(
        "--config", type=Path, default=None, help="TOML configuration file (default: built-in)"
    )
    target = invalidate.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--customer",
        type=customer_id,
        metavar="ID",
        help="the customer's access answers and session validations",
    )
    target.add_argument(
        "--session", type=session_token, metavar="TOKEN", help="one session, by its token"
    )
    target.add_argument(
        "--session-hash",
        type=sha256_hex,
        metavar="HEX",
        help="one session, by the SHA-256 (hex) of its token",
    )
    target.add_argument("--all", action="store_true", help="every cached answer and session")
    invalidate.set_defaults(handler=_invalidate)

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
