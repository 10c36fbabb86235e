"""``paywall-gateway sandbox``: run the platform simulator until SIGINT / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from gateway.sandbox.app import API_PREFIX, CALLS_PATH, SandboxOptions, create_app
from gateway.sandbox.data import load_data
from gateway.sandbox.model import SandboxData

EXIT_USAGE = 2
# The seed file shipped as package data, gateway/resources/sandbox-data.json (what
# gateway.resources.sandbox_seed() returns); found by path, as the simulator imports no gateway
# module but its own and gateway.errors.
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "resources" / "sandbox-data.json"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


EPILOG = f"""\
call counts: the simulator counts every API request it answers, per operation (OpenAPI
operationId, e.g. validateCustomerSession, checkAccessOfCustomer, validateTransferToken) and
status. GET {CALLS_PATH} (outside {API_PREFIX}) returns them as JSON:
{{"total": N, "calls": {{operationId: N}}, "statuses": {{operationId: {{status: N}}}}}};
DELETE {CALLS_PATH} returns them and resets them to zero. Both need the same
X-plenigo-token as the API when --api-token is set. The real platform has no such endpoint.

simulator-only operations (same token): POST /_sandbox/customers/ID/buy and .../cancel with
{{"accessRightUniqueId": "premium"}} (cancel also takes "endDate", default now), POST
.../block and .../unblock, DELETE /_sandbox/customers/ID. With --callback-url they send the
platform's callbacks (SUBSCRIPTION, ORDER, CUSTOMER); GET /_sandbox/callbacks lists deliveries.
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (a sub-command parser or a standalone one)."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port (%(default)s; 0 = any free)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"seed data file (default: {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--api-token",
        default=None,
        help="require this X-plenigo-token on every request (default: any)",
    )
    parser.add_argument(
        "--latency",
        type=_non_negative,
        default=0.0,
        help="seconds added to every response (%(default)s)",
    )
    parser.add_argument(
        "--error-rate",
        type=_fraction,
        default=0.0,
        help="fraction of requests answered 500 (%(default)s)",
    )
    parser.add_argument(
        "--rate-limit-rate",
        type=_fraction,
        default=0.0,
        help="fraction of requests answered 429 (%(default)s)",
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        default=1,
        help="Retry-After seconds on injected 429s (%(default)s)",
    )
    parser.add_argument(
        "--time-zone",
        default="Europe/Berlin",
        help="time zone of daily access windows (%(default)s)",
    )
    parser.add_argument(
        "--transfer-token-ttl",
        type=_non_negative,
        default=30.0,
        help="seconds a transfer token stays valid (%(default)s)",
    )
    parser.add_argument(
        "--callback-url",
        default=None,
        help="POST the platform's callbacks here (buy, cancel, block, unblock, delete under "
        "/_sandbox/customers/ID); default: none sent",
    )
    parser.add_argument(
        "--callback-tries",
        type=int,
        default=5,
        help="tries per callback, with a backoff from 0.1 s doubling up to 2 s (%(default)s)",
    )


def _describe(data: SandboxData, base_url: str, now: datetime) -> str:
    tokens = ", ".join(
        f"{s.token} (customer {s.customer_id}{'' if s.valid_at(now) else ', expired'})"
        for s in data.sessions.values()
    )
    return f"sandbox: platform API on {base_url} — seeded session tokens: {tokens or 'none'}"


async def _serve(args: argparse.Namespace, data: SandboxData, options: SandboxOptions) -> None:
    app = create_app(data, options)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown_host = f"[{host}]" if ":" in str(host) else host
        base_url = f"http://{shown_host}:{port}{API_PREFIX}"
        print(_describe(data, base_url, datetime.now(UTC)), flush=True)
        calls_url = f"http://{shown_host}:{port}{CALLS_PATH}"
        print(f"sandbox: call counts on {calls_url} (GET; DELETE resets)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    """Load the data and serve until SIGINT / SIGTERM; 2 with a message when it cannot start."""
    path: Path = args.data or DEFAULT_DATA
    try:
        data = load_data(path, datetime.now(UTC))
        options = SandboxOptions(
            api_token=args.api_token,
            latency=args.latency,
            error_rate=args.error_rate,
            rate_limit_rate=args.rate_limit_rate,
            retry_after=args.retry_after,
            time_zone=args.time_zone,
            transfer_token_ttl=args.transfer_token_ttl,
            callback_url=args.callback_url,
            callback_tries=args.callback_tries,
        )
        create_app(data, options)  # validates the options (e.g. the time zone) before binding
    except ValueError as exc:
        print(f"paywall-gateway sandbox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(_serve(args, data, options))
    except OSError as exc:  # e.g. the port is taken
        print(
            f"paywall-gateway sandbox: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0
