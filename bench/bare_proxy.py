"""The reference for proxy mode: the barest streaming aiohttp reverse proxy, run like `serve`
runs (uvloop when installed, no access log).

python bench/bare_proxy.py PORT UPSTREAM_PORT

One aiohttp server and one ClientSession (opened and closed with the app, as
gateway/web/proxy.py does): every request is sent to http://127.0.0.1:UPSTREAM_PORT with the
same method, path, query, headers (minus hop-by-hop ones) and streamed body; the answer comes
back with its status and headers (minus hop-by-hop ones), its body streamed with iter_any().
No decision, no header rewriting beyond that: what proxy mode costs on top of it is the
gateway's own work.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",  # aiohttp sets it (or chunks) from the streamed body itself
    }
)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


def without_hop_by_hop(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            kept.add(name, value)
    return kept


async def body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


async def relay(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    async with session.request(
        request.method,
        request.app[UPSTREAM] + request.raw_path,
        headers=without_hop_by_hop(request.headers),
        data=body(request) if request.body_exists else None,
        allow_redirects=False,
        auto_decompress=False,
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=without_hop_by_hop(upstream.headers),
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def client_session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30.0)
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        trust_env=False,
    ) as session:
        app[SESSION] = session
        yield


def main() -> None:
    app = web.Application()
    app[UPSTREAM] = f"http://127.0.0.1:{int(sys.argv[2])}"
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", relay)
    try:
        import uvloop
    except ImportError:
        loop = None
    else:
        loop = uvloop.new_event_loop()
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=loop
    )


if __name__ == "__main__":
    main()
