"""The reference for gateway throughput: the barest aiohttp handler, run like `serve` runs.

python bench/bare_app.py PORT [--empty]

It answers 200 "ok" to every request, or with --empty 200 with an empty body: the trivial
authz handler behind nginx's auth_request (nginx reuses an upstream connection after an auth
subrequest only if the answer has no body, as the gateway's auth answers have none).
"""

from __future__ import annotations

import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def empty(request: web.Request) -> web.Response:
    return web.Response(status=200)


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", empty if "--empty" in sys.argv[2:] else ok)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
