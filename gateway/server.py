"""``paywall-gateway serve``: the main listener and the admin listener, with a graceful stop.

On SIGTERM or SIGINT both listeners stop accepting connections at once; requests already in
flight get ``server.shutdown_grace`` seconds to finish, then they are cut. Either way the
process exits 0 (1 only if cleaning up failed, which is logged). A listener that cannot bind
ends start-up with exit code 2 and a message.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from gateway import access_log
from gateway.compiled import compiled_modules
from gateway.config import Settings
from gateway.logs import configure_logging
from gateway.web.admin import create_admin_app
from gateway.web.app import create_app
from gateway.web.protocol import GatewayRunner

log = logging.getLogger(__name__)

EXIT_USAGE = 2
# aiohttp treats a shutdown timeout of 0 as "no timeout"; this is the smallest we pass.
MIN_SHUTDOWN_TIMEOUT = 0.001
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BindError(Exception):
    """A listener could not bind its address."""


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # the optional "speed" extra is not installed
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(settings: Settings) -> int:
    """Serve until SIGTERM / SIGINT; the process exit code."""
    configure_logging(
        settings.logging,
        secret_cookie=settings.server.session_cookie,
        secret_params=(settings.server.transfer_token_param,),
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            return runner.run(_serve(settings))
        except BindError as exc:
            print(f"paywall-gateway: {exc}", file=sys.stderr)
            return EXIT_USAGE


async def _start_site(runner: web.AppRunner, host: str, port: int, what: str) -> web.TCPSite:
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BindError(f"cannot listen on {host}:{port} ({what}): {reason}") from None
    return site


async def _serve(settings: Settings) -> int:
    server = settings.server
    # aiohttp 3.14 drains a connection in two phases of shutdown_timeout each: it waits for the
    # handler, then stops the request body (a handler that reads no body keeps running) and
    # waits again, then cancels. Half the grace per phase bounds the whole drain by the grace.
    shutdown_timeout = max(server.shutdown_grace / 2, MIN_SHUTDOWN_TIMEOUT)
    main_app = create_app(settings)
    # GatewayRunner: a request the HTTP parser refuses gets a 400 that echoes none of its bytes
    # (and one short, rate-limited log line).
    runners: list[web.AppRunner] = [
        GatewayRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
        for app in (main_app, create_admin_app(main_app))
    ]
    main_runner, admin_runner = runners

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    started: list[web.AppRunner] = []
    try:
        for runner in runners:
            started.append(runner)  # cleanup() also finishes a startup that failed half-way
            await runner.setup()  # the main app's startup (cleanup_ctx) runs here
        main_site = await _start_site(main_runner, server.host, server.port, "main")
        admin_site = await _start_site(admin_runner, server.admin_host, server.admin_port, "admin")
        _freeze_startup_objects()
        log.info(
            "listening",
            extra={
                "fields": {
                    "mode": server.mode,
                    "host": server.host,
                    "port": main_site.port,
                    "admin_host": server.admin_host,
                    "admin_port": admin_site.port,
                    # How many request-path modules run compiled (gateway.compiled): 0 for a
                    # pure-Python install.
                    "compiled": len(compiled_modules()),
                }
            },
        )
        await stop.wait()
        # Closing the listening sockets first refuses new connections at once; cleanup() below
        # then lets in-flight requests finish within the grace and cancels what is left.
        for runner in runners:
            for site in list(runner.sites):
                await site.stop()
        in_flight = len(main_runner.server.connections) if main_runner.server else 0
        log.info(
            "draining",
            extra={"fields": {"connections": in_flight, "grace": server.shutdown_grace}},
        )
    finally:
        failed = await _cleanup(started)
        access_log.flush()  # every line, those of requests that finished while draining too
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return 1 if failed else 0


def _freeze_startup_objects() -> None:
    """Keep what start-up built (modules, the configuration, the app: about 65,000 objects)
    out of the cycle collector's full collections, which otherwise walk all of it again each
    time: 20-30 ms with the loop stopped, every request in flight waiting (measured with
    ``gc.callbacks`` under load). Start-up's garbage is collected first; what requests create
    later is collected as before."""
    gc.collect()
    gc.freeze()


async def _cleanup(runners: list[web.AppRunner]) -> bool:
    """Drain and clean up every runner; True when one of them failed (logged, not raised)."""
    results = await asyncio.gather(
        *(runner.cleanup() for runner in runners), return_exceptions=True
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    for error in errors:
        log.error("shutdown failed: %r", error, exc_info=error)
    return bool(errors)
