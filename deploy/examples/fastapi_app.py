"""A FastAPI app behind the paywall middleware, with one view that requires an access right of
its own (``gateway.fastapi.require_access``) on top of the path rules.

Against the platform simulator, from the repository root::

    make sandbox                                                  # terminal 1, port 8090
    .venv/bin/uvicorn --app-dir deploy/examples fastapi_app:app --port 8000     # terminal 2

    curl -i http://127.0.0.1:8000/articles/free                   # public
    curl -i -H 'Accept: application/json' http://127.0.0.1:8000/reports/q3          # 401 JSON
    curl -i -H 'Cookie: paywall_session=demo-session-plain' http://127.0.0.1:8000/reports/q3
    curl -i -H 'Cookie: paywall_session=demo-session-no-rights' \\
        -H 'Accept: application/json' http://127.0.0.1:8000/reports/q3             # 403 JSON

``/reports/*`` is public by the path rules; the view's dependency requires ``archive``. The
refusal is the middleware's own page (login redirect, 401, 403 or 503, HTML or JSON) through
the ``AccessRefused`` handler. A real site passes its TOML file:
``app.add_middleware(PaywallMiddleware, config="gateway.toml")``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from gateway.asgi import PaywallMiddleware
from gateway.config import Settings
from gateway.fastapi import AccessRefused, Decision, access_refused_handler, require_access

settings = Settings(
    platform={"base_url": "http://127.0.0.1:8090/api/v3.0"},  # `make sandbox`
    server={"cookie_secure": False, "login_url": "https://www.example.com/login"},
    routes=[
        {"path": "/premium/**", "access_rights": ["premium"]},
        {"path": "/**", "public": True},
    ],
)

app = FastAPI(exception_handlers={AccessRefused: access_refused_handler})
app.add_middleware(PaywallMiddleware, config=settings)

Archive = Annotated[Decision, Depends(require_access("archive"))]


@app.get("/articles/{slug}")
async def article(slug: str, request: Request) -> dict[str, Any]:
    decision = request.state.paywall  # public route: access "public", no customer
    return {"article": slug, "access": decision.access}


@app.get("/premium/{slug}")
async def premium(slug: str, request: Request) -> dict[str, Any]:
    decision = request.state.paywall  # granted by the path rule
    return {"article": slug, "customer_id": decision.customer_id}


@app.get("/reports/{name}")
async def report(name: str, paywall: Archive) -> dict[str, Any]:
    return {"report": name, "customer_id": paywall.customer_id, "cache": paywall.cache}
