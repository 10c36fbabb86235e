"""A visitor's request body as a stream for the upstream, bounded.

An async generator, so kept out of :mod:`gateway.web.proxy`, which the compiled build compiles
(mypyc compiles no async generators; :mod:`gateway.compiled`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

__all__ = ["BodyTooLarge", "limited_body"]


class BodyTooLarge(Exception):
    """The body outgrew its limit while it was being streamed."""


async def limited_body(
    request: web.Request, limit: int | None, too_large: list[bool]
) -> AsyncIterator[bytes]:
    """``request``'s body as it arrives; aiohttp's flow control keeps the buffer small. Past
    ``limit`` bytes (None: no limit) it sets ``too_large[0]`` and raises :class:`BodyTooLarge`,
    which aborts the upstream request (the caller answers 413)."""
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if limit is not None and received > limit:
            too_large[0] = True
            raise BodyTooLarge
        yield chunk
